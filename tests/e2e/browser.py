"""Headless Debian chromium driven by Selenium, and the few Airflow 3 UI steps the browser test needs.

Never lets Selenium Manager fetch anything: the driver path is given to ``Service`` (Selenium then
skips its manager) and the browser binary is set explicitly. The Airflow 3 UI is a React (Chakra)
app: every step waits explicitly (WebDriverWait) for an element that the next step needs, found by
``data-testid``, ``name`` or visible text, never by generated ids or CSS classes.
"""
from __future__ import annotations

import contextlib

import os
import time
from dataclasses import dataclass

CHROMIUM = "/usr/bin/chromium"          # Debian's chromium (a wrapper script around the binary)
CHROMEDRIVER = "/usr/bin/chromedriver"  # Debian's chromium-driver, same version
HEADLESS_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def find_chromium() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or the reason they cannot be used."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    if missing:
        return (f"{' and '.join(missing)} not installed (Debian packages chromium and chromium-driver: "
                f"bin/system-deps)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in this venv (bin/venv worker)"
    return CHROMIUM, CHROMEDRIVER


def new_driver(chromium: str = CHROMIUM, chromedriver: str = CHROMEDRIVER, log_path: str | None = None):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in HEADLESS_ARGS:
        options.add_argument(arg)
    service = Service(executable_path=chromedriver, log_output=log_path)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(120)
    return driver


def is_png(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(len(PNG_MAGIC))
    return head == PNG_MAGIC and os.path.getsize(path) > 1000


def _xpath_literal(s: str) -> str:
    return f"'{s}'" if "'" not in s else f'"{s}"'


@dataclass
class AirflowUI:
    """One browser session against an ``airflow standalone`` UI (simple auth manager)."""
    driver: object
    url: str
    out_dir: str
    timeout: float = 90

    def wait(self, timeout: float | None = None, poll: float = 0.5):
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait
        return WebDriverWait(self.driver, timeout or self.timeout, poll_frequency=poll,
                             ignored_exceptions=(StaleElementReferenceException,))

    def visible(self, by: str, sel: str, timeout: float | None = None):
        from selenium.webdriver.support import expected_conditions as EC
        return self.wait(timeout).until(EC.visibility_of_element_located((by, sel)),
                                        f"not visible within {timeout or self.timeout}s: {sel}")

    def clickable(self, by: str, sel: str, timeout: float | None = None):
        from selenium.webdriver.support import expected_conditions as EC
        el = self.wait(timeout).until(EC.presence_of_element_located((by, sel)), f"not present: {sel}")
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
        return self.wait(timeout).until(EC.element_to_be_clickable((by, sel)), f"not clickable: {sel}")

    def screenshot(self, name: str) -> str:
        path = os.path.join(self.out_dir, name)
        assert self.driver.save_screenshot(path), f"could not save {path}"
        print(f"screenshot: {path}")
        return path

    def dump(self, name: str) -> str:
        """Screenshot and DOM, for a failure."""
        html = os.path.join(self.out_dir, f"{name}.html")
        with open(html, "w") as fh:
            fh.write(self.driver.page_source)
        self.screenshot(f"{name}.png")
        print(f"page source: {html} (url {self.driver.current_url})")
        return html

    def wait_text(self, text: str, timeout: float | None = None) -> str:
        """Until the page's visible text contains ``text``; returns that text."""
        from selenium.webdriver.common.by import By
        seen = {}

        def shown(driver):
            seen["text"] = driver.find_element(By.TAG_NAME, "body").text
            return text in seen["text"]
        self.wait(timeout).until(shown, f"{text!r} not on the page within {timeout or self.timeout}s")
        return seen["text"]

    # --- the steps ----------------------------------------------------------------------------

    def login(self, username: str, password: str) -> None:
        """The simple auth manager's form (/auth/login): username, password, Sign in."""
        from selenium.webdriver.common.by import By
        self.driver.get(self.url)
        self.visible(By.NAME, "username").send_keys(username)
        self.visible(By.NAME, "password").send_keys(password)
        self.clickable(By.XPATH, "//button[@type='submit'][normalize-space()='Sign in']").click()
        self.wait().until(lambda d: "/auth/login" not in d.current_url, "still on the login page")
        self.visible(By.CSS_SELECTOR, "[data-testid='nav-dags-link']")  # the app's navigation

    def open_dag(self, dag_id: str) -> None:
        """Dags (navigation) -> the DAG's link in the list -> its page, with its heading."""
        from selenium.webdriver.common.by import By
        self.clickable(By.CSS_SELECTOR, "[data-testid='nav-dags-link']").click()
        self.clickable(By.XPATH, f"//a[normalize-space()={_xpath_literal(dag_id)}]").click()
        self.wait().until(lambda d: d.current_url.rstrip("/").endswith(f"/dags/{dag_id}"),
                          f"did not reach the page of {dag_id}")
        self.visible(By.XPATH, f"//h2[normalize-space()={_xpath_literal(dag_id)}]")

    def pause_toggle_state(self) -> str:
        from selenium.webdriver.common.by import By
        return self.visible(By.CSS_SELECTOR, "label[data-testid='toggle-pause']").get_attribute("data-state")

    def unpause(self) -> bool:
        """Switch the DAG page's pause toggle on when it is off; True if it was paused."""
        from selenium.webdriver.common.by import By
        if self.pause_toggle_state() == "checked":
            return False
        self.clickable(By.CSS_SELECTOR, "label[data-testid='toggle-pause']").click()
        self.wait().until(lambda d: self.pause_toggle_state() == "checked", "the DAG did not unpause")
        return True

    def open_trigger_form(self, dag_id: str) -> None:
        from selenium.webdriver.common.by import By
        self.clickable(By.CSS_SELECTOR, "[data-testid='trigger-dag-button']").click()
        self.visible(By.XPATH, f"//*[@role='dialog']//*[contains(normalize-space(), "
                               f"{_xpath_literal('Trigger Dag - ' + dag_id)})]")
        self.visible(By.XPATH, "//*[@role='dialog']//button[@data-part='item-trigger']"
                               "[contains(., 'Run Parameters')]")

    def set_boolean_param(self, name: str, value: bool) -> None:
        """A boolean param is a Chakra switch: ``label#switch:element_<name>`` with data-state."""
        from selenium.webdriver.common.by import By
        sel = f"label[id='switch:element_{name}']"
        want = "checked" if value else "unchecked"
        if self.visible(By.CSS_SELECTOR, sel).get_attribute("data-state") != want:
            self.clickable(By.CSS_SELECTOR, sel).click()
        self.wait().until(lambda d: d.find_element(By.CSS_SELECTOR, sel).get_attribute("data-state") == want,
                          f"param {name} did not become {value}")

    def open_advanced_options(self) -> None:
        from selenium.webdriver.common.by import By
        self.clickable(By.XPATH, "//*[@role='dialog']//button[@data-part='item-trigger']"
                                 "[contains(., 'Advanced Options')]").click()
        self.visible(By.NAME, "dagRunId")

    def set_run_id(self, run_id: str) -> None:
        from selenium.webdriver.common.by import By
        box = self.visible(By.NAME, "dagRunId")
        box.clear()
        box.send_keys(run_id)
        self.wait().until(lambda d: d.find_element(By.NAME, "dagRunId").get_attribute("value") == run_id,
                          "the run id box did not take the run id")

    def conf_json_text(self, until: str = "", timeout: float = 30) -> str:
        """The "Configuration JSON" editor's text (the conf the form will send), as displayed; the
        editor draws its lines a moment after the advanced options open (on a loaded machine, seconds
        later): waits up to ``timeout`` for it to show any text (with ``until``: that text)."""
        deadline = time.monotonic() + timeout
        while True:
            text = (self.driver.execute_script(
                "return Array.from(document.querySelectorAll('[role=dialog] .view-lines'))"
                ".map(e => e.innerText).join('\\n')") or "").replace("\xa0", " ")
            if (text.strip() and until in text) or time.monotonic() > deadline:
                return text
            time.sleep(0.25)

    def submit_trigger(self, dag_id: str, run_id: str) -> None:
        """Trigger; the UI then navigates to the new run's page."""
        from selenium.webdriver.common.by import By
        self.clickable(By.CSS_SELECTOR, "[data-testid='trigger-dag-submit']").click()
        self.wait().until(lambda d: d.current_url.rstrip("/").endswith(f"/dags/{dag_id}/runs/{run_id}"),
                          f"the UI did not open the run {run_id} after Trigger")

    def run_state(self, run_id: str) -> str | None:
        """The state badge next to the run's heading on its page ("Running", "Success", ...)."""
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
        from selenium.webdriver.common.by import By
        try:
            return self.driver.find_element(
                By.XPATH, f"//h2[normalize-space()={_xpath_literal(run_id)}]/parent::*"
                          f"//*[@data-testid='state-badge']").text.strip() or None
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    def wait_run_finished(self, run_id: str, timeout: float, reload_every: float = 120) -> tuple[str, list]:
        """Watch the run page (it refreshes itself while the run is active) until the badge shows a
        final state; reload the page now and then in case the polling stalls. Returns the final
        state and the states seen on the way."""
        terminal = {"success", "failed"}
        seen: list[str] = []
        last_reload = time.monotonic()

        def finished(driver):
            nonlocal last_reload
            state = self.run_state(run_id)
            if state and (not seen or seen[-1] != state):
                seen.append(state)
            if state and state.lower() in terminal:
                return state
            if time.monotonic() - last_reload > reload_every:
                driver.refresh()
                last_reload = time.monotonic()
            return False

        from selenium.common.exceptions import TimeoutException
        try:
            state = self.wait(timeout, poll=3).until(finished)
        except TimeoutException:
            raise AssertionError(f"run {run_id} not finished in the UI after {timeout:.0f}s "
                                 f"(states seen: {seen})") from None
        return state, seen

    def wait_tasks_settled(self, expected: set[str], timeout: float = 120, reload_every: float = 10) -> dict:
        """Reload the run page until its task table lists every expected task in a final state.

        Needed because the run page stops polling once the run badge is final, and the run turns
        success while the teardown (clean_staging) still runs: the table can keep a stale
        "Running" row (the grid beside it is already green) until the page is reloaded."""
        final = {"success", "skipped", "failed", "upstream failed", "removed"}
        self.driver.refresh()
        last_reload = time.monotonic()

        def settled(driver):
            nonlocal last_reload
            states = self.task_states()
            if expected <= states.keys() and all(s.lower() in final for s in states.values()):
                return states
            if time.monotonic() - last_reload > reload_every:
                driver.refresh()
                last_reload = time.monotonic()
            return False

        from selenium.common.exceptions import TimeoutException
        try:
            return self.wait(timeout, poll=1).until(settled)
        except TimeoutException:
            raise AssertionError(f"task table not settled after {timeout:.0f}s: {self.task_states()}") from None

    def task_states(self) -> dict[str, str]:
        """The run page's task instance table: task id -> state badge text.

        Read in one script call, so a re-render of the table between two WebDriver round trips
        cannot leave us holding a stale row (the table is re-rendered while the page polls)."""
        states = self.driver.execute_script("""
            const out = {};
            for (const cell of document.querySelectorAll("td[data-testid='table-cell-state']")) {
              const row = cell.closest('tr');
              const link = row && row.querySelector("a[href*='/tasks/']");
              const badge = cell.querySelector("[data-testid='state-badge']");
              if (link && badge) out[link.textContent.trim()] = badge.textContent.trim();
            }
            return out;""")
        return dict(states or {})

    # --- human-in-the-loop (Airflow 3.3's "Required Actions") ----------------------------------

    def open_required_actions(self) -> None:
        """Browse (navigation) -> Required Actions: every pending and answered HITL request."""
        from selenium.webdriver.common.by import By
        self.clickable(By.XPATH, "//*[@data-testid='nav-sidebar']//button[contains(normalize-space(), 'Browse')]").click()
        self.clickable(By.XPATH, "//a[contains(@href, '/required_actions')][contains(normalize-space(), "
                                 "'Required Actions')]").click()
        self.wait().until(lambda d: "/required_actions" in d.current_url, "did not reach Required Actions")

    def open_required_action(self, dag_id: str, run_id: str, task_id: str) -> None:
        """In a Required Actions list, the row of (run, task): its task link -> the task instance's
        Required Actions tab, which holds the request and the response form."""
        from selenium.webdriver.common.by import By
        href = f"/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/required_actions"
        self.clickable(By.XPATH, f"//table//a[contains(@href, {_xpath_literal(href)})]").click()
        self.wait().until(lambda d: d.current_url.split("?")[0].rstrip("/").endswith(href),
                          f"did not reach {href}")

    def fill_param(self, name: str, value: str) -> None:
        """A text param of a HITL (or trigger) form: the input/textarea named ``element_<name>``."""
        from selenium.webdriver.common.by import By
        box = self.visible(By.NAME, f"element_{name}")
        box.clear()
        box.send_keys(value)
        self.wait().until(lambda d: d.find_element(By.NAME, f"element_{name}").get_attribute("value") == value,
                          f"param {name} did not take the text")

    def respond(self, option: str) -> None:
        """Click a HITL option button (``hitl-option-<option>``: Approve / Reject); the form then
        shows "Response received at ..." and the buttons are disabled."""
        from selenium.webdriver.common.by import By
        self.clickable(By.CSS_SELECTOR, f"button[data-testid='hitl-option-{option}']").click()
        self.visible(By.XPATH, "//*[contains(normalize-space(), 'Response received at')]")


@contextlib.contextmanager
def ui_session(chromium: tuple[str, str], url: str, tmp_path):
    """An AirflowUI on ``url`` (screenshots and the chromedriver log under ``tmp_path``); the
    browser quits on leaving."""
    out = tmp_path / "screenshots"
    out.mkdir()
    print(f"\nbrowser output: {out}")
    driver = new_driver(*chromium, log_path=str(tmp_path / "chromedriver.log"))
    try:
        yield AirflowUI(driver, url, str(out))
    finally:
        driver.quit()
