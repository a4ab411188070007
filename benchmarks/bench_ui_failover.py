"""The browser UI's failover: a real page (Debian's chromium, headless) showing a live value; SIGKILL the active ->
the value moves again on the page, without a reload; then main restarts and takes the role back, and the page follows."""

from __future__ import annotations

import asyncio
import threading
import time

import aiohttp
from bench_live import POINT, keep_writing
from harness import first_act, parser, report, running_cluster, seconds, summary, view
from playwright.sync_api import Page, sync_playwright

from webmanager.tools.cli import call_api
from webmanager.tools.launcher import LocalCluster, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
USER, PASSWORD = "bench", "bench-password-1"
CELL = f'tr[data-point="{POINT}"] td.value'
TIMEOUT_MS = 20_000

# Resolves with the browser's wall clock (ms) when the page first shows the counter above `above`.
SHOWN_ABOVE = """([selector, above]) => new Promise((resolve) => {
  const check = () => {
    const cell = document.querySelector(selector);
    if (cell && Number(cell.textContent) > above) { observer.disconnect(); resolve(Date.now()); return true; }
    return false;
  };
  const observer = new MutationObserver(check);
  observer.observe(document.querySelector("main"), { subtree: true, childList: true, characterData: true });
  check();
})"""


def writer(cluster: LocalCluster, stop: threading.Event) -> threading.Thread:
    """bench_live's counter writer, in a thread of its own until `stop` is set."""

    async def run() -> None:
        headers = {"Authorization": f"Bearer {cluster.config.api_token}"}
        async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=0.5)) as session:
            task = asyncio.create_task(keep_writing(session, cluster))
            await asyncio.to_thread(stop.wait)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread


def shown(page: Page) -> float:
    text = page.locator(CELL).text_content() or ""
    return float(text) if text.replace(".", "", 1).isdigit() else 0.0


def log_in(page: Page, cluster: LocalCluster) -> None:
    page.goto(f"{cluster.config.node('main').url}/#/points")
    page.get_by_label("User").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector(CELL, timeout=TIMEOUT_MS)
    page.evaluate("window.sameDocument = true")


def failovers(cluster: LocalCluster, page: Page, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Per run: (SIGKILL -> the page shows newer values, the backup's first act -> the same, main's first act after the
    fail-back -> the page shows values from main again)."""
    from_kill, from_activation, failback = [], [], []
    for _ in range(runs):
        wait_for(lambda: cluster.caught_up("backup", "main"), 30, "the backup to catch up")
        page.wait_for_selector("#connection[data-state=active][data-node=main]", timeout=TIMEOUT_MS)
        page.evaluate(SHOWN_ABOVE, [CELL, shown(page)])  # values are flowing from main
        term, before = view(cluster, "main")["term"], shown(page)
        killed = time.time()
        cluster["main"].kill()
        flowing = page.evaluate(SHOWN_ABOVE, [CELL, before]) / 1000
        term, activated = first_act(cluster, "backup", term)
        from_kill.append(flowing - killed)
        from_activation.append(flowing - activated)
        cluster["main"].start()
        term, back = first_act(cluster, "main", term, 30)
        page.wait_for_selector("#connection[data-state=active][data-node=main]", timeout=TIMEOUT_MS)
        failback.append(page.evaluate(SHOWN_ABOVE, [CELL, shown(page)]) / 1000 - back)
        assert page.evaluate("window.sameDocument") is True, "the page was reloaded"
    return from_kill, from_activation, failback


def main() -> int:
    args = parser(__doc__, runs=10).parse_args()
    with running_cluster(args.keep) as cluster:
        code, answer = call_api(cluster.config, cluster["main"].spec.api, "PUT", f"/api/v1/users/{USER}", {"role": "viewer", "password": PASSWORD})
        assert code == 201, answer
        stop = threading.Event()
        thread = writer(cluster, stop)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            log_in(page, cluster)
            from_kill, from_activation, failback = failovers(cluster, page, args.runs)
            browser.close()
        stop.set()
        thread.join()
    ok = report(
        "ui_failover",
        [
            ("SIGKILL active -> values moving on the page", summary(from_kill), "median <= 2 s", seconds, lambda s: s["median"] <= 2.0),
            ("new active's first act -> values moving on the page", summary(from_activation), "median <= 2 s", seconds, lambda s: s["median"] <= 2.0),
            ("fail-back: main's first act -> values from main on the page", summary(failback), "-", seconds, lambda s: None),
        ],
        {"samples": {"kill": from_kill, "activation": from_activation, "failback": failback}},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
