"""The console in a real browser (Debian's chromium via Playwright) against a live ``acmenfs serve``.

The main flow: sign in, create a share with an access rule, write into its
volume over NFS (libnfs), snapshot, clone, see the lineage tree, revert with the
confirmation, extend, delete with cascade, sign out. Also: a wrong token is
refused, the page refuses a malformed access rule, the pages fit a phone's
width, the console works from the keyboard, and /docs renders with every
non-local request blocked. Screenshots of each page go to tests/console/screenshots/.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

import httpx
import libnfs
from playwright.sync_api import expect

from browser_fixtures import DESKTOP, PHONE

MiB = 1 << 20


def sign_in(page, serve, token=None):
    page.goto(serve.url + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login"))
    page.get_by_label("API token").fill(token or serve.token)
    page.get_by_role("button", name="Sign in").click()


def write_over_nfs(url: str, volume: str, data: bytes) -> None:
    client = libnfs.NFS(url)  # keep the context alive while its handle is used
    handle = client.open(f"/{volume}", "r+")
    handle.write(bytearray(data))
    handle.close()


def read_over_nfs(url: str, volume: str, count: int) -> str:
    client = libnfs.NFS(url)
    handle = client.open(f"/{volume}", "r")
    text = handle.read(count)
    handle.close()
    return text if isinstance(text, str) else bytes(text).decode()


def api(serve) -> httpx.Client:
    return httpx.Client(base_url=serve.url, headers={"Authorization": f"Bearer {serve.token}"}, timeout=60)


def test_a_wrong_token_is_refused(serve, page_at, shot):
    page = page_at()
    sign_in(page, serve, token="acmenfs_not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("invalid or was revoked")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    shot(page, "login-refused-1280")
    assert not [c for c in page.context.cookies() if c["name"] == "acmenfs_session"]
    page.goto(serve.url + "/ui/shares")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))


def test_share_lifecycle_in_the_browser(serve, page_at, shot):
    page = page_at()
    sign_in(page, serve)
    expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
    expect(page.get_by_text("Signed in with token 'admin'.")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "acmenfs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and serve.token not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # nothing readable by scripts

    # Create a share with an access rule (no squash, so this root test process may write).
    page.get_by_role("link", name="Shares", exact=True).click()
    page.get_by_label("Name", exact=True).fill("vol-1")
    page.get_by_label("Size").fill("64M")
    page.get_by_label("Volume file (optional)").fill("volume-1")
    page.get_by_label("Access rules (optional)").fill("127.0.0.1:rw:none")
    page.get_by_role("button", name="Create share").click()
    expect(page.locator("#share-name")).to_have_text("vol-1")
    expect(page.locator("#access-table")).to_contain_text("127.0.0.1")
    expect(page.locator("#volume-file")).to_contain_text("volume-1")
    share_url = page.url
    nfs_url = page.locator("#nfs-url").input_value()
    assert nfs_url.startswith("nfs://127.0.0.1/shares/") and f"nfsport={serve.nfs_port}" in nfs_url

    # The page refuses a malformed rule before sending it; the server refuses it too (see test_console_http).
    page.get_by_label("Add or replace a rule").fill("10.0.0.300:rw")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#access-form .field-error")).to_contain_text("not CLIENT[:rw|ro[:root|all|none]]")
    assert page.url == share_url
    page.get_by_label("Add or replace a rule").fill("10.0.0.0/24:ro")
    page.get_by_role("button", name="Add rule").click()
    expect(page.locator("#access-table")).to_contain_text("10.0.0.0/24")

    write_over_nfs(nfs_url, "volume-1", b"A" * MiB)
    page.get_by_label("New snapshot").fill("snap-1")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("li.snapshot[data-snapshot='snap-1']")).to_be_visible()
    write_over_nfs(nfs_url, "volume-1", b"B" * MiB)
    page.get_by_label("New snapshot").fill("snap-2")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("li.snapshot[data-snapshot='snap-2']")).to_be_visible()
    shot(page, "share-1280")

    # Clone snap-1 into a bigger share: the page follows the job to the clone's page.
    snap_1 = page.locator("li.snapshot[data-snapshot='snap-1']")
    snap_1.get_by_label("Clone as").fill("vol-1-clone")
    snap_1.get_by_label("size").fill("128M")
    snap_1.get_by_role("button", name="Clone").click()
    expect(page.locator("#share-name")).to_have_text("vol-1-clone")
    expect(page.locator("#share-size")).to_contain_text("128.0 MiB")
    tree = page.get_by_role("list", name="Clone lineage tree")
    expect(tree.locator("li.node-share > a", has_text="vol-1")).to_be_visible()
    expect(tree.locator("li.node-snapshot", has_text="snap-1").locator("li.current")).to_contain_text("vol-1-clone")
    clone_nfs_url = page.locator("#nfs-url").input_value()
    assert read_over_nfs(clone_nfs_url, "volume-1", 16) == "A" * 16
    shot(page, "share-clone-1280")

    # Revert vol-1 to snap-1: the confirmation names what is lost and keeps snap-2.
    page.goto(share_url)
    page.locator("li.snapshot[data-snapshot='snap-1']").get_by_role("link", name="Revert…").click()
    expect(page.locator("#revert-loss")).to_contain_text("everything written to share vol-1 since snapshot snap-1")
    expect(page.locator("#revert-later")).to_contain_text("kept")
    expect(page.get_by_role("listitem").filter(has_text="snap-2")).to_be_visible()
    shot(page, "revert-confirm-1280")
    page.get_by_role("button", name="Revert to snap-1").click()
    expect(page).to_have_url(share_url)
    expect(page.get_by_text("Reverted to snapshot 'snap-1'.")).to_be_visible()
    assert read_over_nfs(nfs_url, "volume-1", 16) == "A" * 16

    # Extend.
    page.get_by_label("Extend to").fill("96M")
    page.get_by_role("button", name="Extend").click()
    expect(page.locator("#share-size")).to_contain_text("96.0 MiB")
    expect(page.locator("#volume-file")).to_contain_text("96.0 MiB")

    # The dashboard counts what is there and shows the NFS traffic.
    page.get_by_role("link", name="Dashboard").click()
    expect(page.locator("#share-count")).to_have_text("2")
    expect(page.locator("#snapshot-count")).to_have_text("2")
    expect(page.locator("#procedures")).to_contain_text("WRITE")
    # serve runs one NFS worker per CPU by default (as root; 1 otherwise): the dashboard says how many
    expect(page.locator("#workers")).to_have_text(str(os.cpu_count() or 1) if os.geteuid() == 0 else "1")
    shot(page, "dashboard-1280")

    # Delete with cascade: the confirmation lists the snapshots; the clone stays.
    page.goto(share_url)
    page.get_by_role("link", name="Delete share…").click()
    expect(page.locator("#delete-cascade-list")).to_contain_text("2 snapshots will be deleted too")
    expect(page.get_by_role("main")).to_contain_text("snap-1")
    expect(page.get_by_role("main")).to_contain_text("vol-1-clone")
    shot(page, "delete-confirm-1280")
    page.get_by_label("Also delete its 2 snapshots").check()
    page.get_by_role("button", name="Delete vol-1").click()
    expect(page).to_have_url(re.compile(r"/ui/shares$"))
    expect(page.get_by_text("Deleted share 'vol-1' and its snapshots.")).to_be_visible()
    table = page.locator("#shares-table")
    expect(table).to_contain_text("vol-1-clone")
    expect(table.get_by_role("link", name="vol-1", exact=True)).to_have_count(0)
    shot(page, "shares-1280")
    table.get_by_role("link", name="vol-1-clone").click()  # its origin snapshot went with vol-1
    expect(page.locator("#lineage")).to_contain_text("cloned from a snapshot that no longer exists")

    # Sign out: the session is gone.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.goto(serve.url + "/ui/dashboard")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))


def test_job_errors_show_the_api_problem_text(serve, page_at):
    with api(serve) as client:
        share = client.post("/v1/shares", json={"name": "err-1", "size": 8 * MiB}).json()
        client.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "s"})
    page = page_at()
    sign_in(page, serve)
    page.goto(f"{serve.url}/ui/shares/{share['id']}")
    page.get_by_label("New snapshot").fill("s")  # the name is taken
    page.get_by_role("button", name="Take snapshot").click()
    expect(page.locator("#job-panel")).to_contain_text("Conflict (409 name_conflict)")
    page.get_by_label("Extend to").fill("1M")  # smaller than the share: refused on the page
    page.get_by_role("button", name="Extend").click()
    expect(page.locator("#extend-size")).to_have_attribute("aria-invalid", "true")
    assert "never shrink" in page.locator("#extend-size").evaluate("e => e.validationMessage")


def test_shares_table_sorts_and_filters(serve, page_at, shot):
    with api(serve) as client:
        for name, size in (("sort-b", 3 * MiB), ("sort-a", 9 * MiB), ("sort-c", 1 * MiB)):
            client.post("/v1/shares", json={"name": name, "size": size})
    page = page_at()
    sign_in(page, serve)
    page.goto(serve.url + "/ui/shares?q=sort-")
    names = page.locator("#shares-table tbody th")
    expect(names).to_have_text(["sort-a", "sort-b", "sort-c"])
    page.get_by_role("link", name="Size").click()
    expect(names).to_have_text(["sort-c", "sort-b", "sort-a"])
    expect(page.locator("th[aria-sort='ascending']")).to_contain_text("Size")
    page.get_by_role("link", name="Size").click()
    expect(names).to_have_text(["sort-a", "sort-b", "sort-c"])
    page.get_by_label("Filter").fill("sort-b")
    page.get_by_label("Filter").press("Enter")
    expect(names).to_have_text(["sort-b"])


def test_tokens_create_and_revoke_end_sessions(serve, page_at, browser):
    page = page_at()
    sign_in(page, serve)
    page.goto(serve.url + "/ui/tokens")
    page.get_by_label("Name", exact=True).fill("ops")
    page.get_by_role("button", name="Create token").click()
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("acmenfs_")
    other = page_at()
    sign_in(other, serve, token=secret)
    expect(other.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
    page.on("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke token ops").click()
    expect(page.get_by_text("Token revoked")).to_be_visible()
    other.reload()
    expect(other).to_have_url(re.compile(r"/ui/login\?next="))


def test_pages_fit_a_phone(serve, page_at, shot):
    with api(serve) as client:
        share = client.post("/v1/shares", json={"name": "phone-share-with-a-long-name", "size": 32 * MiB,
                                                "volume": {"name": "volume-phone"},
                                                "access": [{"client": "10.20.30.0/24", "access": "ro"}]}).json()
        snapshot = client.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "phone-snap"}).json()
        client.post(f"/v1/snapshots/{snapshot['id']}/clone", json={"name": "phone-clone"})
    page = page_at(PHONE)
    sign_in(page, serve)
    for name, path in (("dashboard", "/ui/dashboard"), ("shares", "/ui/shares"),
                       ("share", f"/ui/shares/{share['id']}"), ("tokens", "/ui/tokens"),
                       ("revert-confirm", f"/ui/shares/{share['id']}/revert?snapshot={snapshot['id']}")):
        page.goto(serve.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        shot(page, f"{name}-375")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
    page.set_viewport_size(DESKTOP)
    page.goto(serve.url + f"/ui/shares/{share['id']}")
    shot(page, "share-snapshots-1280")


def test_keyboard_only_sign_in_and_navigation(serve, page_at):
    page = page_at()
    page.goto(serve.url + "/ui/login")
    assert page.evaluate("document.activeElement.id") == "token"  # the token field has the focus
    page.keyboard.type(serve.token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Dashboard", exact=True)).to_be_visible()
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    for landmark in ("banner", "navigation", "main", "contentinfo"):
        expect(page.get_by_role(landmark).first).to_be_visible()
    page.get_by_role("link", name="Shares", exact=True).focus()
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # focus is visible
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/ui/shares$"))
    # every form control has a label
    unlabeled = page.evaluate("""[...document.querySelectorAll('input:not([type=hidden])')]
        .filter(i => !i.labels.length && !i.getAttribute('aria-label')).map(i => i.name)""")
    assert unlabeled == []


# WCAG contrast of every element's own text against the first opaque background behind it.
CONTRAST_PROBLEMS = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (; el; el = el.parentElement) {
      const c = rgb(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || c[3] > 0.5) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const problems = [];
  for (const el of document.querySelectorAll("body *")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest("[hidden]")) continue;
    const style = getComputedStyle(el);
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(el))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = +style.fontWeight >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) problems.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return problems;
}"""


def test_text_contrast_meets_wcag_aa(serve, page_at):
    with api(serve) as client:
        share = client.post("/v1/shares", json={"name": "contrast", "size": MiB,
                                                "access": [{"client": "*", "access": "ro"}]}).json()
        client.post(f"/v1/shares/{share['id']}/snapshots", json={"name": "c1"})
    page = page_at()
    page.goto(serve.url + "/ui/login")
    assert page.evaluate(CONTRAST_PROBLEMS) == []
    sign_in(page, serve)
    for path in ("/ui/dashboard", "/ui/shares", f"/ui/shares/{share['id']}", "/ui/tokens",
                 f"/ui/shares/{share['id']}/delete"):
        page.goto(serve.url + path)
        assert page.evaluate(CONTRAST_PROBLEMS) == [], path


def test_docs_render_with_no_network(serve, page_at, shot):
    page = page_at()
    blocked = []

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_local)
    page.goto(serve.url + "/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    assert page.locator(".opblock").count() >= 15
    expect(page.locator(".opblock-summary-path", has_text="/v1/shares/{share_id}/revert")).to_be_visible()
    shot(page, "docs-offline-1280")
    assert blocked == [], f"/docs asked the network for {blocked}"


def test_without_javascript_a_job_has_its_own_page(serve, page_at, shot):
    with api(serve) as client:
        share = client.post("/v1/shares", json={"name": "no-js", "size": 4 * MiB}).json()
    page = page_at(javascript=False)
    sign_in(page, serve)
    page.goto(f"{serve.url}/ui/shares/{share['id']}")
    page.get_by_label("New snapshot").fill("plain")
    page.get_by_role("button", name="Take snapshot").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/"))
    expect(page.get_by_text(re.compile(r"^Done in"))).to_be_visible()  # the page refreshes itself until then
    shot(page, "job-done-1280")
    page.get_by_role("link", name="Continue").click()
    expect(page.locator("li.snapshot[data-snapshot='plain']")).to_be_visible()
