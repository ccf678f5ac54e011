"""The status page in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, driven with
selenium) against a real `agenthost serve --http` subprocess over its real socket. Skipped, with the reason, when
Chromium, its driver or selenium is missing (`make test` installs them when apt is available).

AGENTHOST_UPDATE_SCREENSHOT=1 makes the demo test write the README's screenshot, docs/status-page.png."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servicekit import ServiceProcess, turn_events

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SLOW_RESTART = "[host.worker_policy.backoff]\ninitial_s = 3.0\n"
STREAMING = "".join(f'[host.worker_faults."{w}"]\ndelta_delay_s = 0.8\n' for w in (1, 2))


def _missing() -> str | None:
    if CHROMIUM is None or DRIVER is None:
        return "headless Chromium is not installed (apt-get install chromium chromium-driver; `make test` does it)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1300"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - an element replaced while read: look again
            last_error, value = exc, None
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"the page never showed {what} within {timeout_s} s (last error: {last_error!r})")


def page_url(svc: ServiceProcess) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agenthost", "url", "--root", str(svc.root)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def worker_row(driver: Any, worker_id: int) -> dict[str, str]:
    from selenium.webdriver.common.by import By

    row = driver.find_element(By.CSS_SELECTOR, f'#workers tr[data-worker="{worker_id}"]')
    cells = {name: row.find_element(By.CLASS_NAME, name).text for name in ("pid", "generation", "countdown")}
    return {"state": row.get_attribute("data-state"), **cells}


def open_page(driver: Any, svc: ServiceProcess) -> None:
    from selenium.webdriver.common.by import By

    driver.get(page_url(svc))
    wait_for(lambda: driver.find_element(By.ID, "connection").text == "live", "the live connection")


def kill_worker(svc: ServiceProcess, worker_id: int) -> int:
    with svc.client() as client:
        workers = client.call("status")["workers"]
    pid = next(w["pid"] for w in workers if w["worker_id"] == worker_id)
    os.kill(pid, signal.SIGKILL)
    return int(pid)


def test_a_killed_worker_goes_restarting_with_a_countdown_then_ready(service, browser) -> None:
    from selenium.webdriver.common.by import By

    svc: ServiceProcess = service(SLOW_RESTART, args=("--http", "127.0.0.1:0"))
    open_page(browser, svc)
    before = wait_for(lambda: (row := worker_row(browser, 1))["state"] == "ready" and row, "worker 1 ready")
    assert before["generation"] == "1"
    killed = kill_worker(svc, 1)
    restarting = wait_for(
        lambda: (row := worker_row(browser, 1))["state"] == "restarting" and row, "worker 1 restarting"
    )
    assert restarting["countdown"].startswith("restart in ") and restarting["countdown"].endswith(" s")
    first = float(restarting["countdown"].split()[2])
    assert 0.0 < first <= 3.0
    later = wait_for(
        lambda: (
            (text := worker_row(browser, 1)["countdown"]).startswith("restart in ")
            and float(text.split()[2]) < first
            and text
        ),
        "the countdown going down",
    )
    assert float(later.split()[2]) < first
    ready = wait_for(lambda: (row := worker_row(browser, 1))["state"] == "ready" and row, "worker 1 ready again")
    assert ready["generation"] == "2" and ready["pid"] != str(killed) and ready["countdown"] == "-"
    decision = browser.find_element(By.CSS_SELECTOR, '#timeline li[data-decision="restart"][data-child="worker-1"]')
    assert "killed by signal" in decision.text and "attempt 1" in decision.text
    last_exit = browser.find_element(By.CSS_SELECTOR, '#workers tr[data-worker="1"] .last-exit').text
    assert "signal" in last_exit


def test_an_approval_answered_with_the_button_completes_the_turn(service, browser) -> None:
    from selenium.webdriver.common.by import By

    svc: ServiceProcess = service(STREAMING, args=("--http", "127.0.0.1:0"))
    open_page(browser, svc)
    with svc.client() as client:
        thread_id = client.call("threads.create", {"title": "approve from the page"})["thread_id"]
        turn_id = client.call("turns.send", {"thread_id": thread_id, "text": "RUN: echo from-the-page"})["turn_id"]
        events = turn_events(client, turn_id)
        next(e for e in events if e["event"]["type"] == "ApprovalRequested")
        card = f'#approvals [data-turn="{turn_id}"]'
        accept = wait_for(
            lambda: browser.find_element(By.CSS_SELECTOR, f'{card} button[data-decision="accept"]'), "the approval"
        )
        assert "echo from-the-page" in browser.find_element(By.CSS_SELECTOR, card).text
        accept.click()
        streamed = wait_for(
            lambda: (
                (text := browser.find_element(By.CSS_SELECTOR, f'#active [data-turn="{turn_id}"] .stream').text)
                not in ("", "…")
                and text
            ),
            "the turn's streamed text",
        )
        finished = list(events)[-1]["event"]
    assert finished["status"] == "completed" and finished["text"].startswith(streamed[:10])
    status = wait_for(
        lambda: browser.find_element(By.CSS_SELECTOR, f'#recent tr[data-turn="{turn_id}"] .status').text,
        "the turn completed",
    )
    assert status == "completed"
    wait_for(lambda: not browser.find_elements(By.CSS_SELECTOR, card), "the approval gone")
    browser.find_element(By.CSS_SELECTOR, f'#threads li[data-thread="{thread_id}"]').click()
    wait_for(lambda: "echo from-the-page" in browser.find_element(By.ID, "transcript").text, "the transcript")


def test_the_page_without_its_token_is_refused(service, browser) -> None:
    from selenium.webdriver.common.by import By

    svc: ServiceProcess = service(args=("--http", "127.0.0.1:0"))
    base = page_url(svc).split("?token=")[0]
    browser.get(base)
    assert "Forbidden: a valid token is required" in browser.find_element(By.TAG_NAME, "body").text
    browser.get(base + "api/snapshot?token=not-the-token")
    assert "Forbidden" in browser.find_element(By.TAG_NAME, "body").text


def test_screenshot_of_the_demos_data(service, browser, tmp_path: Path) -> None:
    """The README's picture: the demo's root served live, a worker restarting and an approval waiting."""
    from selenium.webdriver.common.by import By

    demo = subprocess.run(
        [sys.executable, "-m", "agenthost", "demo", "--root", str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    slow_restart = "[host.worker_policy.backoff]\ninitial_s = 8.0\n"
    streaming = "".join(f'[host.worker_faults."{w}"]\ndelta_delay_s = 0.4\n' for w in (1, 2))
    svc: ServiceProcess = service(slow_restart + streaming, args=("--http", "127.0.0.1:0"))
    open_page(browser, svc)
    with svc.client() as client:
        for thread in client.call("threads.list"):  # a few turns for the plots
            client.call("turns.send", {"thread_id": thread["thread_id"], "text": "status?", "stream": False})
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#recent tbody tr")) == 3, "three turns ended")
    kill_worker(svc, 2)
    wait_for(lambda: worker_row(browser, 2)["state"] == "restarting", "worker 2 restarting")
    with svc.client() as client:
        threads = client.call("threads.list")
        client.call("turns.send", {"thread_id": threads[0]["thread_id"], "text": "RUN: make release", "stream": False})
        streaming = {"thread_id": threads[1]["thread_id"], "text": "summarise the incident report", "stream": False}
        client.call("turns.send", streaming)
        follow = {"thread_id": threads[0]["thread_id"], "text": "then tag the release", "stream": False}
        assert client.call("turns.send", follow)["queued"] is True  # its thread is busy: a follow-up
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#approvals [data-approval]"), "the approval")
    queued = f'#followups [data-thread="{threads[0]["thread_id"]}"] [data-followup]'
    assert "then tag the release" in wait_for(lambda: browser.find_element(By.CSS_SELECTOR, queued).text, "it")
    wait_for(
        lambda: any(e.text not in ("", "…") for e in browser.find_elements(By.CSS_SELECTOR, "#active .stream")),
        "a streaming turn",
    )
    first = threads[0]["thread_id"]
    browser.find_element(By.CSS_SELECTOR, f'#threads li[data-thread="{first}"]').click()
    wait_for(lambda: "## Turn" in browser.find_element(By.ID, "transcript").text, "a transcript")
    target = ROOT / "docs" / "status-page.png" if os.environ.get("AGENTHOST_UPDATE_SCREENSHOT") else tmp_path / "s.png"
    assert browser.save_screenshot(str(target))
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
