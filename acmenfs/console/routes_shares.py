"""Console pages for shares and snapshots, and the changes made from them.

Owns the share table (sorted and filtered on the server, so it works without
JavaScript), a share's page (volume file, NFS URL, access rules, snapshots,
clone lineage), the revert and delete confirmations, and the actions: create,
access add/remove, snapshot, clone, revert, extend, delete. Quick changes call
the service in FastAPI's thread pool; long ones (anything that may copy data)
run as jobs. Every call goes through ``ApplianceService``; its errors come back
as the API's problem text. It must not touch files or the store.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request

from acmenfs.appliance.api_http import problem_body
from acmenfs.appliance.errors import ApplianceError
from acmenfs.console.forms import FormError, access_field, access_list, form_fields, size_field, text_field
from acmenfs.console.lineage import lineage_tree, tree_size
from acmenfs.console.sessions import Session
from acmenfs.console.web import UI, Console, problem_for, problem_text, redirect, rule_text, wants_json

SORT_KEYS = {
    "name": lambda s: s.name.lower(),
    "size": lambda s: s.size,
    "used": lambda s: s.used_bytes,
    "state": lambda s: s.state,
    "volume": lambda s: s.volume.name if s.volume else "",
    "export": lambda s: s.export_path,
    "clients": lambda s: len(s.access),
}


def form_problem(error: FormError) -> dict[str, Any]:
    """A refused form value, in the API's problem shape (the API answers 422 the same way)."""
    return problem_body(422, error.code, str(error))


def share_matches(share, query: str) -> bool:
    haystack = " ".join([share.name, share.state, share.export_path, share.volume.name if share.volume else "",
                         *(rule_text(rule) for rule in share.access)]).lower()
    return all(word in haystack for word in query.lower().split())


def sorted_shares(shares: list, query: str, sort: str, direction: str) -> list:
    shares = [share for share in shares if share_matches(share, query)] if query else list(shares)
    key = SORT_KEYS.get(sort, SORT_KEYS["name"])
    return sorted(shares, key=lambda s: (key(s), s.name), reverse=direction == "desc")


def share_url(share_id: str) -> str:
    return f"{UI}/shares/{share_id}"


def share_list_routes(router: APIRouter, console: Console, page_session, change_session) -> None:
    service = console.service

    def render_list(session: Session, q: str, sort: str, direction: str, status: int = 200,
                    form: dict[str, str] | None = None):
        shares = sorted_shares(service.list_shares(), q, sort, direction)
        return console.render("shares.html", session, status, shares=shares, q=q, sort=sort, dir=direction,
                              form=form or {}, nfs=service.nfs, total=len(service.list_shares()))

    @router.get("/shares", include_in_schema=False)
    def shares(q: str = "", sort: str = "name", dir: str = "asc", session: Session = Depends(page_session)):
        return render_list(session, q.strip(), sort if sort in SORT_KEYS else "name",
                           "desc" if dir == "desc" else "asc")

    @router.post("/shares", include_in_schema=False)
    def create_share(request: Request, session: Session = Depends(change_session),
                     fields: dict[str, str] = Depends(form_fields)):
        name, volume = text_field(fields, "name"), text_field(fields, "volume")
        try:
            size = size_field(fields)
            rules = access_list(fields.get("access", ""))
            share = service.create_share(name, size, volume={"name": volume} if volume else None, access=rules)
        except (FormError, ApplianceError) as exc:
            problem = form_problem(exc) if isinstance(exc, FormError) else problem_for(exc)
            if wants_json(request):
                return console.failed(request, session, f"{UI}/shares", problem)
            session.flash("error", problem_text(problem))  # the form comes back with what was typed
            return render_list(session, "", "name", "asc", problem["status"], form=fields)
        session.flash("ok", f"Created share '{share.name}'.")
        return redirect(share_url(share.id))


def share_page_routes(router: APIRouter, console: Console, page_session, change_session) -> None:
    service = console.service

    @router.get("/shares/{share_id}", include_in_schema=False)
    def share_page(share_id: str, session: Session = Depends(page_session)):
        try:
            share = service.get_share(share_id)
            snapshots = service.list_snapshots(share_id)
            tree = lineage_tree(service, share_id)
        except ApplianceError as exc:
            return console.render("error.html", session, exc.status, problem=problem_for(exc))
        return console.render("share.html", session, share=share, snapshots=snapshots, tree=tree,
                              tree_shares=tree_size(tree), nfs=share.to_dict(service.nfs)["nfs"])

    @router.post("/shares/{share_id}/access", include_in_schema=False)
    def add_access(request: Request, share_id: str, session: Session = Depends(change_session),
                   fields: dict[str, str] = Depends(form_fields)):
        try:
            rule = access_field(fields.get("rule", ""))
            service.add_access(share_id, rule)
        except FormError as exc:
            return console.failed(request, session, share_url(share_id), form_problem(exc))
        except ApplianceError as exc:
            return console.failed(request, session, share_url(share_id), problem_for(exc))
        session.flash("ok", f"Access rule {rule_text(rule)} saved.")
        return redirect(share_url(share_id) + "#access")

    @router.post("/shares/{share_id}/access/remove", include_in_schema=False)
    def remove_access(request: Request, share_id: str, session: Session = Depends(change_session),
                      fields: dict[str, str] = Depends(form_fields)):
        client = text_field(fields, "client")
        try:
            service.remove_access(share_id, client)
        except ApplianceError as exc:
            return console.failed(request, session, share_url(share_id), problem_for(exc))
        session.flash("ok", f"Access rule for {client} removed.")
        return redirect(share_url(share_id) + "#access")

    @router.post("/snapshots/{snapshot_id}/delete", include_in_schema=False)
    def delete_snapshot(request: Request, snapshot_id: str, session: Session = Depends(change_session),
                        fields: dict[str, str] = Depends(form_fields)):
        back = share_url(text_field(fields, "share_id")) if fields.get("share_id") else f"{UI}/shares"
        try:
            snapshot = service.get_snapshot(snapshot_id)
            service.delete_snapshot(snapshot_id)
        except ApplianceError as exc:
            return console.failed(request, session, back, problem_for(exc))
        session.flash("ok", f"Deleted snapshot '{snapshot.name}'.")
        return redirect(share_url(snapshot.share_id) + "#snapshots")


def confirm_routes(router: APIRouter, console: Console, page_session) -> None:
    service = console.service

    @router.get("/shares/{share_id}/revert", include_in_schema=False)
    def confirm_revert(share_id: str, snapshot: str = "", session: Session = Depends(page_session)):
        try:
            share = service.get_share(share_id)
            target = service.get_snapshot(snapshot)
            later = [s for s in service.list_snapshots(share_id) if s.created_at > target.created_at]
        except ApplianceError as exc:
            return console.render("error.html", session, exc.status, problem=problem_for(exc))
        return console.render("confirm_revert.html", session, share=share, snapshot=target, later=later)

    @router.get("/shares/{share_id}/delete", include_in_schema=False)
    def confirm_delete(share_id: str, session: Session = Depends(page_session)):
        try:
            share = service.get_share(share_id)
            snapshots = service.list_snapshots(share_id)
        except ApplianceError as exc:
            return console.render("error.html", session, exc.status, problem=problem_for(exc))
        snapshot_ids = {s.id for s in snapshots}
        clones = [s for s in service.list_shares() if s.origin_snapshot_id in snapshot_ids]
        return console.render("confirm_delete.html", session, share=share, snapshots=snapshots, clones=clones)


def job_routes(router: APIRouter, console: Console, change_session) -> None:
    """Changes that may copy data: each answers at once with a job to poll."""
    service = console.service

    def start(request: Request, session: Session, title: str, back: str, work, done_message: str):
        def run(progress) -> str:
            result_url = work(progress)
            session.flash("ok", done_message)
            return result_url

        return console.job_answer(request, console.jobs.submit(title, session.token_id, back, run))

    def refuse(request, session, back, exc: Exception):
        problem = form_problem(exc) if isinstance(exc, FormError) else problem_for(exc)
        return console.failed(request, session, back, problem)

    @router.post("/shares/{share_id}/snapshots", include_in_schema=False)
    def snapshot(request: Request, share_id: str, session: Session = Depends(change_session),
                 fields: dict[str, str] = Depends(form_fields)):
        name = text_field(fields, "name")
        back = share_url(share_id)

        def work(progress) -> str:
            service.create_snapshot(share_id, name)
            return back + "#snapshots"

        return start(request, session, f"Snapshot '{name}'", back, work, f"Created snapshot '{name}'.")

    @router.post("/snapshots/{snapshot_id}/clone", include_in_schema=False)
    def clone(request: Request, snapshot_id: str, session: Session = Depends(change_session),
              fields: dict[str, str] = Depends(form_fields)):
        name = text_field(fields, "name")
        back = share_url(text_field(fields, "share_id"))
        copy_access = fields.get("copy_access") in ("1", "on")
        try:
            size = size_field(fields, required=False)
        except FormError as exc:
            return refuse(request, session, back, exc)

        def work(progress) -> str:
            # "same clients": the source share's rules; otherwise the API's default (nobody).
            rules = list(service.get_share(service.get_snapshot(snapshot_id).share_id).access) if copy_access else None
            share = service.clone_snapshot(snapshot_id, name, size=size, access=rules, progress=progress)
            return share_url(share.id)

        return start(request, session, f"Clone '{name}'", back, work, f"Cloned into new share '{name}'.")

    @router.post("/shares/{share_id}/revert", include_in_schema=False)
    def revert(request: Request, share_id: str, session: Session = Depends(change_session),
               fields: dict[str, str] = Depends(form_fields)):
        snapshot_id, back = text_field(fields, "snapshot_id"), share_url(share_id)
        label = text_field(fields, "snapshot_name") or snapshot_id

        def work(progress) -> str:
            service.revert_share(share_id, snapshot_id)
            return back

        return start(request, session, f"Revert to '{label}'", back, work, f"Reverted to snapshot '{label}'.")

    @router.post("/shares/{share_id}/extend", include_in_schema=False)
    def extend(request: Request, share_id: str, session: Session = Depends(change_session),
               fields: dict[str, str] = Depends(form_fields)):
        back = share_url(share_id)
        try:
            size = size_field(fields)
        except FormError as exc:
            return refuse(request, session, back, exc)

        def work(progress) -> str:
            service.extend_share(share_id, size)
            return back

        return start(request, session, f"Extend to {fields.get('size')}", back, work, f"Extended to {fields.get('size')}.")

    @router.post("/shares/{share_id}/delete", include_in_schema=False)
    def delete(request: Request, share_id: str, session: Session = Depends(change_session),
               fields: dict[str, str] = Depends(form_fields)):
        name = text_field(fields, "share_name") or share_id
        cascade = fields.get("cascade") in ("1", "on", "true")

        def work(progress) -> str:
            service.delete_share(share_id, cascade=cascade)
            return f"{UI}/shares"

        return start(request, session, f"Delete '{name}'", f"{UI}/shares/{quote(share_id)}/delete", work,
                     f"Deleted share '{name}'" + (" and its snapshots." if cascade else "."))
