"""The Web Manager in a real browser (Debian's chromium, headless, driven by Playwright) against a real three-process
cluster: log in, watch a live value change, write a point, page through many points, acknowledge an alarm, see the trend
chart; a standby's page is read-only and names the active; then SIGKILL the active: the page shows the new active and
values resume without a reload. Screenshots go to test-artifacts/<test>/screenshots/."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from conftest import ARTIFACTS, COUNTER, Updater, activation_since, point_view, report
from playwright.sync_api import Browser, Page, sync_playwright

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
USER, PASSWORD = "olivia", "olivia's long password"
SETPOINT, TEMPERATURE, ALARM, LOBBY = "live.setpoint", "live.temperature", "live.too-hot", "live.lobby"
BUILDING = {
    "points": [{"name": COUNTER}, {"name": TEMPERATURE}, {"name": SETPOINT, "writable": True}, {"name": LOBBY, "writable": True}],
    "alarms": [{"name": ALARM, "point": TEMPERATURE, "type": "high", "limit": 50.0, "priority": 10, "message": "too hot"}],
    "trends": [{"name": COUNTER, "point": COUNTER}],
}
TIMEOUT_MS = 15_000
HISTORY = 7200  # seconds of the counter's trend before the test starts


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / request.node.name / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def cell(point: str) -> str:
    return f'tr[data-point="{point}"] td.value'


def shown_count(page: Page) -> float:
    text = page.locator(cell(COUNTER)).text_content() or ""
    return float(text) if text.replace(".", "", 1).isdigit() else -1.0


def wait_count_above(page: Page, count: float) -> None:
    """Until the page shows the counter above `count`: values arrive through the live feed, the page is not reloaded."""
    page.wait_for_function(
        "([selector, count]) => Number(document.querySelector(selector)?.textContent) > count", arg=[cell(COUNTER), count], timeout=TIMEOUT_MS
    )


def write(page: Page, point: str, value: str) -> None:
    row = page.locator(f'tr[data-point="{point}"]')
    row.get_by_label(f"New value for {point}").fill(value)
    row.get_by_role("button", name="Write").click()
    page.wait_for_function("([selector, value]) => document.querySelector(selector)?.textContent === value", arg=[cell(point), value], timeout=TIMEOUT_MS)


def log_in(page: Page, url: str, user: str, node: str = "main", role: str = "active") -> None:
    """Open `url`, log in as `user` (password PASSWORD) and wait until the page talks to `node`, which has `role`."""
    page.goto(url)
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector(f"#connection[data-state={role}][data-node={node}]", timeout=TIMEOUT_MS)


def saved(page: Page) -> None:
    """Until the page says its editor's change was committed."""
    page.locator(".page-message", has_text="Saved: 1 change(s) committed.").wait_for(timeout=TIMEOUT_MS)


def prepare(cluster: LocalCluster) -> None:
    """The building and an operator, through the cluster token."""
    api = cluster["main"].spec.api
    code, answer = call_api(cluster.config, api, "POST", "/api/v1/config", BUILDING)
    assert code == 200, answer
    code, answer = call_api(cluster.config, api, "PUT", f"/api/v1/users/{USER}", {"role": "operator", "password": PASSWORD})
    assert code == 201, answer
    history = {"updates": [{"name": COUNTER, "value": -1, "ts": time.time() - HISTORY}]}  # the trend's first sample
    assert call_api(cluster.config, api, "POST", "/api/v1/points", history)[0] == 200
    report(cluster, {COUNTER: 0, TEMPERATURE: 20.0, SETPOINT: 20.0})
    wait_for(lambda: cluster.caught_up("backup", "main"), 10, "the backup to catch up")


def test_the_web_manager_in_a_browser_follows_a_killed_active(ready_cluster, browser, screenshots):
    cluster = ready_cluster
    prepare(cluster)
    main_url, backup_url = (node.url for node in cluster.config.cluster.nodes[:2])
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))

    with Updater(cluster):
        # log in on main, the active server
        log_in(page, f"{main_url}/#/points", USER)
        assert page.get_by_role("link", name="Users").count() == 0  # an operator's navigation has no admin pages
        page.evaluate("window.sameDocument = true")  # gone if the page were ever reloaded

        # live values: the counter moves on the page while nothing reloads it
        page.wait_for_selector(cell(COUNTER), timeout=TIMEOUT_MS)
        wait_count_above(page, shown_count(page))
        write(page, SETPOINT, "21.5")
        page.screenshot(path=screenshots / "1-points-on-main.png", full_page=True)

        # an alarm raised by a field value, acknowledged by the operator
        report(cluster, {TEMPERATURE: 80.0})
        page.get_by_role("link", name="Alarms").click()
        page.wait_for_selector(f'tr[data-alarm="{ALARM}"][data-state="active-unacked"]', timeout=TIMEOUT_MS)
        page.get_by_role("button", name=f"Acknowledge {ALARM}").click()
        page.wait_for_selector(f'tr[data-alarm="{ALARM}"][data-state="active-acked"]', timeout=TIMEOUT_MS)
        code, alarms = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/alarms")
        assert next(a for a in alarms["alarms"] if a["name"] == ALARM)["ack"]["user"] == USER
        page.screenshot(path=screenshots / "2-alarm-acknowledged.png", full_page=True)

        # the trend chart draws the counter's history, by default all of it: from its first sample (two hours ago) to now
        page.get_by_role("link", name="Trends").click()
        page.wait_for_function("() => Number(document.querySelector('.chart')?.dataset.points) >= 2", timeout=TIMEOUT_MS)
        assert page.locator(".chart canvas").count() == 1
        code, answer = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/trends")
        first = next(t for t in answer["trends"] if t["name"] == COUNTER)["first"]
        assert page.locator("#trend-range").input_value() == "fit"
        assert float(page.locator(".chart").get_attribute("data-from") or 0) == pytest.approx(first, abs=0.001)
        span = float(page.locator(".chart").get_attribute("data-span") or 0)
        assert HISTORY <= span <= HISTORY + 600
        box = page.locator(".chart .u-over").bounding_box()
        assert span > 0 and box is not None
        page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)  # drag across the newest 3 %: zoom in
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.9999, box["y"] + box["height"] / 2, steps=5)
        page.mouse.up()
        page.wait_for_function("(span) => Number(document.querySelector('.chart').dataset.span) < span / 2", arg=span, timeout=TIMEOUT_MS)
        page.screenshot(path=screenshots / "3-trend-chart-zoomed.png", full_page=True)
        page.locator(".chart .u-over").dblclick()  # zoom out: the chosen range again
        page.wait_for_function("(span) => Number(document.querySelector('.chart').dataset.span) >= span", arg=span, timeout=TIMEOUT_MS)
        page.screenshot(path=screenshots / "3-trend-chart.png", full_page=True)

        # the standby's own page: read-only, naming and linking the active server
        standby = context.new_page()
        standby.on("pageerror", lambda error: errors.append(str(error)))
        standby.goto(f"{backup_url}/#/points")  # the session cookie is the host's, so it is sent to this port too
        standby.wait_for_selector("#connection[data-state=standby][data-node=backup]", timeout=TIMEOUT_MS)
        assert "backup is a standby server: this page is read-only" in (standby.locator("#banner").text_content() or "")
        assert standby.locator("#active-link").get_attribute("href") == f"{main_url}/"
        standby.wait_for_selector(cell(SETPOINT), timeout=TIMEOUT_MS)
        assert standby.locator(f'tr[data-point="{SETPOINT}"]').get_by_role("button", name="Write").is_disabled()
        wait_count_above(standby, shown_count(standby))  # live values from the standby's replicated image
        standby.screenshot(path=screenshots / "4-standby-read-only.png", full_page=True)

        # SIGKILL the active: the page finds the backup, resubscribes and values flow again, without a reload
        page.get_by_role("link", name="Points").click()
        wait_count_above(page, shown_count(page))
        before = shown_count(page)
        cluster["main"].kill()
        page.wait_for_selector("#connection[data-state=active][data-node=backup]", timeout=TIMEOUT_MS)
        wait_count_above(page, before)
        flowing = time.time()
        activated = wait_for(lambda: activation_since(cluster, "backup"), 5, "the backup's activation")
        assert flowing - activated < 2.0, f"values resumed {flowing - activated:.3f} s after the backup's activation"
        assert page.evaluate("window.sameDocument") is True
        write(page, SETPOINT, "22.5")  # through the new active, from main's page (another origin: CORS and a bearer)
        page.screenshot(path=screenshots / "5-after-failover.png", full_page=True)
        page.get_by_role("link", name="Trends").click()  # the history from the backup, downloaded through it
        page.wait_for_function("() => Number(document.querySelector('.chart')?.dataset.points) >= 2", timeout=TIMEOUT_MS)
        with page.expect_download(timeout=TIMEOUT_MS) as download:
            page.get_by_role("button", name="Download CSV").click()
        rows = Path(download.value.path()).read_text().splitlines()
        assert download.value.suggested_filename == f"{COUNTER}.csv" and "value" in rows[0] and len(rows) > 2, rows[:3]
        standby.wait_for_selector("#connection[data-state=active][data-node=backup]", timeout=TIMEOUT_MS)
        assert standby.locator("#banner").is_hidden()

    context.close()
    assert errors == []


def test_an_engineer_edits_logic_and_schedules_with_the_servers_validation(ready_cluster, browser, screenshots):
    cluster = ready_cluster
    building = {**BUILDING, "logic": [{"name": "double", "output": SETPOINT, "expression": f'p("{TEMPERATURE}") * 2'}]}
    assert call_api(cluster.config, cluster["main"].spec.api, "POST", "/api/v1/config", building)[0] == 200
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "PUT", "/api/v1/users/erin", {"role": "engineer", "password": PASSWORD})
    assert code == 201, answer
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, f"{cluster.config.node('main').url}/#/logic", "erin")

    # the logic editor: a wrong point name is refused with the server's message, naming the rule's field
    rule = page.locator('fieldset[data-rule="double"]')
    rule.wait_for(timeout=TIMEOUT_MS)
    rule.get_by_label("Expression").fill('p("live.temprature") * 2')
    rule.get_by_role("button", name="Check").click()
    problem = rule.locator(".problems li").first
    problem.wait_for(timeout=TIMEOUT_MS)
    assert "logic[0].expression" in (problem.text_content() or "") and "live.temprature" in (problem.text_content() or "")
    page.screenshot(path=screenshots / "1-logic-refused.png", full_page=True)
    rule.get_by_label("Expression").fill(f'p("{TEMPERATURE}") * 3')
    rule.get_by_role("button", name="Save").click()
    saved(page)
    report(cluster, {TEMPERATURE: 7.0})
    wait_for(lambda: (point_view(cluster, "main", SETPOINT) or {}).get("value") == 21.0, 10, "the edited rule to act")

    # the schedule editor: a new schedule, its events typed as time=value, saved through the same check
    page.get_by_role("link", name="Schedules").click()
    editor = page.locator('fieldset[data-schedule=""]')
    editor.get_by_label("Name", exact=True).fill("lobby")
    editor.get_by_label("Point", exact=True).fill(COUNTER)
    editor.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    editor.get_by_label("mon", exact=True).fill("07:00=21, 18:00=17")
    editor.get_by_label("Exceptions").fill("holiday 2026-12-24..2026-12-26: 00:00=15")
    editor.get_by_role("button", name="Save").click()
    editor.locator(".problems li").first.wait_for(timeout=TIMEOUT_MS)  # a field value, not a point a schedule may drive
    assert "schedules[0].point" in (editor.locator(".problems").text_content() or "")
    editor.get_by_label("Point", exact=True).fill(LOBBY)
    editor.get_by_role("button", name="Save").click()
    saved(page)
    page.locator('fieldset[data-schedule="lobby"]').wait_for(timeout=TIMEOUT_MS)  # drawn anew: now an existing schedule
    code, config = call_api(cluster.config, cluster["main"].spec.api, "GET", "/api/v1/config")
    lobby = next(s for s in config["schedules"] if s["name"] == "lobby")
    assert [e["value"] for e in lobby["weekly"]["mon"]] == [21, 17] and lobby["exceptions"][0]["from"] == "2026-12-24"
    page.screenshot(path=screenshots / "2-schedule-saved.png", full_page=True)

    # the audit log shows who changed the configuration
    page.get_by_role("link", name="Audit log").click()
    page.locator("main table tbody tr", has_text="erin").first.wait_for(timeout=TIMEOUT_MS)
    page.screenshot(path=screenshots / "3-audit.png", full_page=True)

    # a new password ends the session: the page asks to log in again
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "PUT", "/api/v1/users/erin", {"password": "erin's new password"})
    assert code == 200, answer
    page.locator("#login-user").wait_for(timeout=TIMEOUT_MS)
    assert "log in again" in (page.locator("main").text_content() or "")
    assert errors == []


def test_an_admin_moves_the_active_role_and_the_page_follows(ready_cluster, browser):
    cluster = ready_cluster
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "PUT", "/api/v1/users/ada", {"role": "admin", "password": PASSWORD})
    assert code == 201, answer
    errors: list[str] = []
    page = browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())
    log_in(page, f"{cluster.config.node('main').url}/#/dashboard", "ada")
    assert page.locator('tr[data-node="witness"] button').count() == 0  # the witness is never offered
    page.get_by_role("button", name="Make backup active").click()
    page.wait_for_selector("#connection[data-state=active][data-node=backup]", timeout=TIMEOUT_MS)
    page.locator('tr[data-node="main"] .role-standby').wait_for(timeout=TIMEOUT_MS)  # the dashboard, now from the backup
    assert cluster.active() == "backup"
    assert errors == []


def test_the_page_leaves_an_active_that_stopped_answering(ready_cluster, browser):
    """SIGSTOP: the active's connections stay open but nothing comes (as after a power cut or a pulled cable); the page's
    pings notice it, and values flow from the backup within 2 s of its activation."""
    cluster = ready_cluster
    prepare(cluster)
    page = browser.new_page()
    with Updater(cluster):
        log_in(page, f"{cluster.config.node('main').url}/#/points", USER)
        page.wait_for_selector(cell(COUNTER), timeout=TIMEOUT_MS)
        wait_count_above(page, shown_count(page))
        before = shown_count(page)
        cluster["main"].signal(signal.SIGSTOP)
        try:
            page.wait_for_selector("#connection[data-state=active][data-node=backup]", timeout=TIMEOUT_MS)
            wait_count_above(page, before)
            flowing = time.time()
            activated = wait_for(lambda: activation_since(cluster, "backup"), 5, "the backup's activation")
            assert flowing - activated < 2.0, f"values resumed {flowing - activated:.3f} s after the backup's activation"
        finally:
            cluster["main"].signal(signal.SIGCONT)


def test_the_points_page_pages_through_more_points_than_one_page_subscribing_only_to_those_shown(ready_cluster, browser, screenshots):
    """450 points, 200 a page: next and previous pages, kept when the page is drawn again, the filter searched on the
    server, live values for the shown page only (the subscribe frames the page sends), on the active and on a standby."""
    cluster = ready_cluster
    prepare(cluster)  # 3 points with values, named live.*
    report(cluster, {f"zone.p{i:03d}": i for i in range(447)})
    wait_for(lambda: cluster.caught_up("backup", "main"), 10, "the backup to catch up")
    errors: list[str] = []
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    frames: list[list[str]] = []  # the points of each subscribe frame the page sent
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: '"subscribe"' in payload and frames.append(json.loads(payload)["subscribe"]["points"])))
    log_in(page, f"{cluster.config.node('main').url}/#/points", USER)

    def shows(text: str, first: str, last: str) -> None:
        """Until the page says `text`, its rows run from `first` to `last` and it subscribed to exactly those."""
        page.locator("#point-count", has_text=text).wait_for(timeout=TIMEOUT_MS)
        names = page.locator("tr[data-point]").evaluate_all("(rows) => rows.map((row) => row.dataset.point)")
        assert (names[0], names[-1]) == (first, last), names
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not (frames and frames[-1] == names):
            assert time.monotonic() < deadline, f"the page subscribed to {len(frames[-1]) if frames else 0} points, not the {len(names)} shown"
            page.wait_for_timeout(20)  # lets Playwright deliver the frames sent meanwhile

    shows("Points 1–200 of 450", COUNTER, "zone.p196")
    assert page.get_by_role("button", name="Previous page").is_disabled()
    page.get_by_role("button", name="Next page").click()
    shows("Points 201–400 of 450", "zone.p197", "zone.p396")
    report(cluster, {"zone.p300": 4321})  # a live value on the shown page
    page.wait_for_function("(selector) => document.querySelector(selector)?.textContent === '4321'", arg=cell("zone.p300"), timeout=TIMEOUT_MS)
    page.screenshot(path=screenshots / "1-points-page-2.png", full_page=True)
    page.get_by_role("button", name="Next page").click()
    shows("Points 401–450 of 450", "zone.p397", "zone.p446")
    assert page.get_by_role("button", name="Next page").is_disabled()
    page.get_by_role("button", name="Previous page").click()
    shows("Points 201–400 of 450", "zone.p197", "zone.p396")
    page.get_by_role("link", name="Devices").click()
    page.get_by_role("link", name="Points").click()  # drawn again (as after a move to another server): the same page
    shows("Points 201–400 of 450", "zone.p197", "zone.p396")
    page.get_by_label("Filter points").fill("P31")  # searched by the server, in any case; back to the first page
    shows("Points 1–10 of 10", "zone.p310", "zone.p319")
    assert page.get_by_role("button", name="Previous page").is_disabled() and page.get_by_role("button", name="Next page").is_disabled()

    context.close()
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    standby = context.new_page()  # the standby's read-only page pages too
    standby.on("pageerror", lambda error: errors.append(str(error)))
    log_in(standby, f"{cluster.config.node('backup').url}/#/points", USER, "backup", "standby")
    standby.locator("#point-count", has_text="Points 1–200 of 450").wait_for(timeout=TIMEOUT_MS)
    standby.get_by_role("button", name="Next page").click()
    standby.locator("#point-count", has_text="Points 201–400 of 450").wait_for(timeout=TIMEOUT_MS)
    standby.screenshot(path=screenshots / "2-standby-points-page-2.png", full_page=True)
    accessibility = Axe().run(standby).generate_report()  # last: a click right after axe's run can be lost
    assert accessibility.startswith("Found 0 "), accessibility
    context.close()
    assert errors == []


PAGES = ["dashboard", "points", "devices", "alarms", "trends", "schedules", "logic", "users", "plugins", "audit"]


def test_every_page_passes_the_axe_accessibility_rules(ready_cluster, browser):
    """axe-core's WCAG rules on the login form, every page an admin sees, and a standby's read-only page."""
    cluster = ready_cluster
    prepare(cluster)
    code, answer = call_api(cluster.config, cluster["main"].spec.api, "PUT", "/api/v1/users/ada", {"role": "admin", "password": PASSWORD})
    assert code == 201, answer
    axe = Axe()
    reports: dict[str, str] = {}
    page = browser.new_page()
    page.goto(f"{cluster.config.node('main').url}/")
    page.locator("#login-user").wait_for(timeout=TIMEOUT_MS)
    reports["login"] = axe.run(page).generate_report()
    log_in(page, f"{cluster.config.node('main').url}/", "ada")
    for name in PAGES:
        page.goto(f"{cluster.config.node('main').url}/#/{name}")
        page.locator("main table, main fieldset, main .chart canvas").first.wait_for(timeout=TIMEOUT_MS)
        reports[name] = axe.run(page).generate_report()
    page.goto(f"{cluster.config.node('backup').url}/#/points")
    page.wait_for_selector(cell(COUNTER), timeout=TIMEOUT_MS)
    reports["standby points"] = axe.run(page).generate_report()
    failing = {name: report for name, report in reports.items() if not report.startswith("Found 0 ")}
    assert not failing, "\n\n".join(f"== {name}\n{report}" for name, report in failing.items())
