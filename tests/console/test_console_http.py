"""The console's protections seen over plain HTTP (httpx) against a live ``acmenfs serve``.

A change without the session's CSRF token is refused (403) and changes
nothing; the sign-in form has its own CSRF check; the session cookie is
HttpOnly and SameSite=Strict and is not the token; a revoked token's session
stops working; the server refuses a malformed access rule with the API's
problem text; a job's status is private to the token that started it; the
ready line names the console URL; /docs references no other host.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Iterator

import httpx

MiB = 1 << 20
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@contextmanager
def signed_in(serve, token: str | None = None) -> Iterator[tuple[httpx.Client, str]]:
    """An httpx client with a console session, and that session's CSRF token."""
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        login_csrf = CSRF.search(client.get("/ui/login").text).group(1)
        answer = client.post("/ui/login", data={"csrf": login_csrf, "token": token or serve.token})
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/dashboard", answer.text
        yield client, CSRF.search(client.get("/ui/shares").text).group(1)


def api(serve) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {serve.token}"}, timeout=60)


def share_names(serve) -> set[str]:
    with api(serve) as client:
        return {share["name"] for share in client.get("/v1/shares").json()["shares"]}


def test_the_ready_line_names_the_console(serve):
    assert f"console {serve.url}/ui)" in serve.stderr_text()


def test_a_post_without_the_csrf_token_is_refused(serve):
    with signed_in(serve) as (client, csrf):
        missing = client.post("/ui/shares", data={"name": "no-csrf", "size": "1M"})
        wrong = client.post("/ui/shares", data={"name": "no-csrf", "size": "1M", "csrf": "x" + csrf})
        wrong_header = client.post("/ui/shares", data={"name": "no-csrf", "size": "1M"},
                                   headers={"X-CSRF-Token": csrf[:-1]})
        for answer in (missing, wrong, wrong_header):
            assert answer.status_code == 403
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "csrf_failed"
        assert "no-csrf" not in share_names(serve)
        accepted = client.post("/ui/shares", data={"name": "with-csrf", "size": "1M"}, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 303 and "with-csrf" in share_names(serve)
        assert client.post("/ui/logout").status_code == 403  # sign-out is a change too


def test_sign_in_needs_its_form_token_and_a_valid_api_token(serve):
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        client.get("/ui/login")
        no_form_token = client.post("/ui/login", data={"token": serve.token})
        assert no_form_token.status_code == 403 and "acmenfs_session" not in client.cookies
        login_csrf = CSRF.search(client.get("/ui/login").text).group(1)
        wrong = client.post("/ui/login", data={"csrf": login_csrf, "token": "acmenfs_wrong"})
        assert wrong.status_code == 401 and "acmenfs_session" not in client.cookies
        assert "invalid or was revoked" in wrong.text


def test_the_session_cookie_is_http_only_strict_and_opaque(serve):
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        login_csrf = CSRF.search(client.get("/ui/login").text).group(1)
        answer = client.post("/ui/login", data={"csrf": login_csrf, "token": serve.token})
        cookie = next(v for k, v in answer.headers.multi_items() if k == "set-cookie" and "acmenfs_session=" in v)
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
        assert serve.token not in cookie and serve.token not in client.get("/ui/dashboard").text
        page = client.get("/ui/dashboard")
        assert "script-src 'self'" in page.headers["content-security-policy"]


def test_nothing_works_without_a_session(serve):
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        for path in ("/ui/dashboard", "/ui/shares", "/ui/tokens", "/ui/dashboard/live"):
            answer = client.get(path)
            assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login?next=")
        posted = client.post("/ui/shares", data={"name": "anon", "size": "1M"})
        assert posted.status_code == 401 and posted.json()["code"] == "unauthorized"
        from_a_form = client.post("/ui/shares", data={"name": "anon", "size": "1M"}, headers={"Accept": "text/html"})
        assert from_a_form.status_code == 303 and from_a_form.headers["location"] == "/ui/login"
        assert client.get("/ui/jobs/x/status", headers={"Accept": "application/json"}).status_code == 401
    assert "anon" not in share_names(serve)


def test_a_revoked_tokens_session_stops_working(serve):
    with api(serve) as admin:
        created = admin.post("/v1/tokens", json={"name": "short-lived"}).json()
    with signed_in(serve, created["token"]) as (client, _):
        assert client.get("/ui/dashboard").status_code == 200
        with api(serve) as admin:
            assert admin.delete(f"/v1/tokens/{created['id']}").status_code == 204
        answer = client.get("/ui/dashboard")
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/login")


def test_the_server_refuses_a_malformed_rule_with_the_api_problem(serve):
    with api(serve) as admin:
        share = admin.post("/v1/shares", json={"name": "rules", "size": MiB}).json()
    with signed_in(serve) as (client, csrf):
        headers = {"X-CSRF-Token": csrf, "Accept": "application/json"}
        bad_client = client.post(f"/ui/shares/{share['id']}/access", data={"rule": "10.0.0.0/33:rw"}, headers=headers)
        assert bad_client.status_code == 422 and bad_client.json()["code"] == "invalid_access"
        bad_form = client.post(f"/ui/shares/{share['id']}/access", data={"rule": ":ro"}, headers=headers)
        assert bad_form.json()["code"] == "invalid_access" and "CLIENT[:rw|ro[:root|all|none]]" in bad_form.json()["detail"]
        # Without JavaScript the same refusal comes back as a message on the share's page.
        plain = client.post(f"/ui/shares/{share['id']}/access", data={"rule": "host.example", "csrf": csrf})
        assert plain.status_code == 303
        page = client.get(plain.headers["location"]).text
        assert "(422 invalid_access): access client must be an IP address, a CIDR or" in page
        good = client.post(f"/ui/shares/{share['id']}/access", data={"rule": "fd00::/64:ro:all"}, headers=headers)
        assert good.status_code == 303
    with api(serve) as admin:
        assert admin.get(f"/v1/shares/{share['id']}").json()["access"] == [
            {"client": "fd00::/64", "access": "ro", "squash": "all"}]


def test_a_job_runs_off_the_request_and_only_its_owner_sees_it(serve):
    with api(serve) as admin:
        share = admin.post("/v1/shares", json={"name": "jobs", "size": MiB}).json()
        other = admin.post("/v1/tokens", json={"name": "other"}).json()
    with signed_in(serve) as (client, csrf):
        started = client.post(f"/ui/shares/{share['id']}/snapshots", data={"name": "j1"},
                              headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert started.status_code == 202
        job = started.json()
        status = client.get(job["status_url"]).json()
        while status["state"] == "running":
            time.sleep(0.05)
            status = client.get(job["status_url"]).json()
        assert status["state"] == "done" and status["result_url"].startswith(f"/ui/shares/{share['id']}")
        snapshot = client.get(job["page_url"])
        assert "Done in" in snapshot.text
    with signed_in(serve, other["token"]) as (stranger, _):
        assert stranger.get(job["status_url"]).status_code == 404


def test_docs_reference_no_other_host(serve):
    with httpx.Client(base_url=serve.url, timeout=60) as client:
        page = client.get("/docs").text
        assert "cdn" not in page.lower() and "https://" not in page
        assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
        assert client.get("/ui/static/console.js").status_code == 200


def test_a_copying_clone_reports_its_progress(serve):
    with api(serve) as admin:
        share = admin.post("/v1/shares", json={"name": "progress", "size": 64 * MiB,
                                               "volume": {"name": "volume-p"}}).json()
        volume = next(serve.data_dir.rglob("volume-p"))
        with open(volume, "r+b") as out:
            for _ in range(48):
                out.write(bytes(range(256)) * 4096)
        snapshot = admin.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "p"}).json()
    with signed_in(serve) as (client, csrf):
        started = client.post(f"/ui/snapshots/{snapshot['id']}/clone", data={"name": "progress-clone", "size": "96M"},
                              headers={"X-CSRF-Token": csrf, "Accept": "application/json"})
        assert started.status_code == 202, started.text
        seen = [started.json()]
        while seen[-1]["state"] == "running":
            time.sleep(0.05)
            seen.append(client.get(started.json()["status_url"]).json())
            assert client.get("/ui/dashboard").status_code == 200  # pages answer while it copies
    assert seen[-1]["state"] == "done" and seen[-1]["percent"] == 100
    percents = [s["percent"] for s in seen if s["percent"] is not None]
    assert percents == sorted(percents)


def test_the_dashboard_live_section_is_a_fragment(serve):
    with signed_in(serve) as (client, _):
        live = client.get("/ui/dashboard/live")
        assert live.status_code == 200 and "Duplicate request cache" in live.text and "<html" not in live.text


def test_a_refused_share_keeps_the_form_and_unknown_pages_are_404(serve):
    with signed_in(serve) as (client, csrf):
        refused = client.post("/ui/shares", data={"csrf": csrf, "name": ".hidden", "size": "5M", "volume": "vol-x"})
        assert refused.status_code == 422
        assert "(422 invalid_name): name must be 1-128 characters" in refused.text
        assert 'value=".hidden"' in refused.text and 'value="vol-x"' in refused.text
        bad_size = client.post("/ui/shares", data={"csrf": csrf, "name": "sized", "size": "5 parsecs"})
        assert bad_size.status_code == 422 and "(422 invalid_size): size: not a size" in bad_size.text
        missing = client.get("/ui/no-such-page")
        assert missing.status_code == 404 and "no console page /ui/no-such-page" in missing.text
        assert client.get("/ui/static/no-such.css").status_code == 404
