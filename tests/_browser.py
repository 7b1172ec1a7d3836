"""Load a self-contained HTML page in headless Chromium and report what a reader's browser would see.

Only the standard library: the Chrome DevTools Protocol (CDP) over ``--remote-debugging-pipe``,
where Chromium reads NUL-terminated JSON messages on its fd 3 and writes them on its fd 4.
``load_page`` returns a :class:`PageReport`: every network request the page made (any URL that is
not ``file:``, ``data:``, ``blob:`` or ``about:``), console errors, uncaught exceptions and browser
log errors, and per ``<img>`` whether it loaded and decoded and its natural size; optionally a
full-page PNG screenshot. ``PageReport.problems()`` lists what a test should fail on.

Only the page's own targets are watched (the page and what it starts, such as workers, attached
automatically): Chromium's own background traffic, if any, would not be counted, and the launch
flags switch it off as far as flags can. Host names are never resolved (``--host-resolver-rules``):
a request to a named host is still reported, it just fails at once, so a page that points to the
internet neither waits for it nor reaches it (an IP address is still connected to).

Limits: what a page starts more than ``settle`` seconds after its load event is not seen, and an
image Chromium draws despite damage (a PNG with a corrupt pixel chunk keeps its size and decodes)
passes.

Import from a test module as ``from _browser import load_page`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

# off: Chromium's own traffic, and whatever a test page does not need
_FLAGS = (
    "--headless=new", "--no-sandbox",  # as root Chromium refuses to start with its sandbox
    "--disable-gpu", "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check",
    "--disable-extensions", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--metrics-recording-only", "--disable-default-apps",
    "--disable-client-side-phishing-detection", "--disable-domain-reliability",
    "--disable-breakpad", "--disable-crash-reporter", "--safebrowsing-disable-auto-update",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--disable-dev-shm-usage", "--password-store=basic", "--use-mock-keychain", "--mute-audio",
    "--hide-scrollbars", "--force-color-profile=srgb",
    "--host-resolver-rules=MAP * ~NOTFOUND",
)

# runs in a fresh interpreter: move the two pipe ends to fds 3 and 4, then become Chromium. Done
# here rather than in a preexec_fn, which is unsafe with threads and could overwrite subprocess's
# own error pipe when that happens to be fd 3 or 4.
# The copies go above 4 first: either end may already sit on 3 or 4, and dup2 onto the same
# number would leave the close-on-exec flag set.
_EXEC_WITH_PIPE = """
import fcntl, os, sys
r, w = (fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 5) for fd in sys.argv[1:3])
os.dup2(r, 3)
os.dup2(w, 4)
os.execv(sys.argv[3], sys.argv[3:])
"""

# everything a check needs about the document, once every <img> has settled; img.decode()
# rejects for an image that failed to load or decode. Lazy images are made eager, so that an image
# below the fold is loaded and checked too.
_STATE_JS = """(async () => {
  const imgs = Array.from(document.images);
  for (const i of imgs) { if (i.loading === "lazy") i.loading = "eager"; }
  const pending = imgs.filter(i => !i.complete).length;
  const images = [];
  for (const i of imgs) {
    let decodeError = null;
    if (i.complete) {
      try { await i.decode(); } catch (e) { decodeError = String(e && e.name || e); }
    }
    images.push({src: (i.currentSrc || i.getAttribute("src") || "").slice(0, 40),
                 complete: i.complete, natural_width: i.naturalWidth,
                 natural_height: i.naturalHeight, decode_error: decodeError});
  }
  return {pending, images, title: document.title, href: location.href, ready: document.readyState,
          scroll_height: document.body ? document.body.scrollHeight : 0};
})()"""


@dataclass
class PageReport:
    """What headless Chromium saw while loading one page."""

    url: str
    title: str = ""
    scroll_height: int = 0
    requests: list = field(default_factory=list)  # URLs the page asked the network for
    errors: list = field(default_factory=list)  # console errors, exceptions, log errors (strings)
    images: list = field(default_factory=list)  # one dict per <img>, in document order
    screenshot: str | None = None
    chromium_version: str = ""

    def problems(self):
        """Human-readable list of what is wrong; empty for a clean page (a page without images is
        not a problem by itself)."""
        out = [f"network request: {url}" for url in self.requests]
        out += [f"error: {text}" for text in self.errors]
        for n, img in enumerate(self.images):
            where = f"image {n} ({img['src']!r})"
            if not img["complete"]:
                out.append(f"{where} did not finish loading")
            elif img["decode_error"]:
                out.append(f"{where} did not decode ({img['decode_error']})")
            elif img["natural_width"] <= 0 or img["natural_height"] <= 0:
                out.append(f"{where} has zero size "
                           f"({img['natural_width']}x{img['natural_height']})")
        return out


def find_chromium():
    """Path of a Chromium (or Chrome) executable, or None: ``$BIOREPS_CHROMIUM`` first, then
    ``chromium``, ``chromium-browser``, ``google-chrome`` on the PATH."""
    chosen = os.environ.get("BIOREPS_CHROMIUM", "").strip()
    if chosen:
        return shutil.which(chosen)
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _Refused(RuntimeError):
    """Chromium answered a command with an error."""


class _Browser:
    """One Chromium process and its CDP pipe; events are queued until someone asks for them."""

    def __init__(self, executable, workdir, deadline):
        self.deadline = deadline
        self.stage = "starting"  # what we wait for, for error messages
        self.stderr_path = os.path.join(workdir, "chromium-stderr.log")
        profile = os.path.join(workdir, "profile")
        to_r, to_w = os.pipe()  # we write, Chromium reads (its fd 3)
        from_r, from_w = os.pipe()  # Chromium writes (its fd 4), we read
        try:
            with open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PIPE, str(to_r), str(from_w),
                     executable, f"--user-data-dir={profile}", *_FLAGS],
                    stdin=subprocess.DEVNULL, stdout=err, stderr=err, pass_fds=(to_r, from_w),
                    start_new_session=True)  # its own process group: killed whole in close()
        finally:
            os.close(to_r)
            os.close(from_w)
        self._out, self._in = to_w, from_r
        self._buffer = b""
        self._next_id = 0
        self.events = []

    def _fail(self, what, dying=False):
        if dying:  # let it finish exiting, so its exit status is known
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        try:
            with open(self.stderr_path, "rb") as fh:
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            lines = []
        # without a session bus every start logs a screenful of D-Bus complaints: not the cause
        tail = "\n".join([line for line in lines if "dbus" not in line.lower()][-20:])
        code = self.proc.poll()
        state = "still running" if code is None else f"exit status {code}"
        raise RuntimeError(f"headless Chromium {what} while {self.stage} ({state}); "
                           f"its stderr ends with:\n{tail or '(nothing)'}")

    def _read_message(self, until=None):
        """The next message; None once ``until`` (a soft deadline) has passed, while the hard
        deadline (``timeout``) raises."""
        while b"\0" not in self._buffer:
            now = time.monotonic()
            if until is not None and now >= until:
                return None
            left = self.deadline - now
            if left <= 0:
                self._fail("did not finish in time")
            if until is not None:
                left = min(left, until - now)
            ready, _, _ = select.select([self._in], [], [], min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    self._fail("exited", dying=True)
                continue
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                self._fail("closed its DevTools pipe", dying=True)
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method, params=None, session=None):
        """Send one command and return its id (without waiting)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._out, data):]
        except BrokenPipeError:
            self._fail(f"closed its DevTools pipe before {method}", dying=True)
        return self._next_id

    def call(self, method, params=None, session=None):
        """Send a command and wait for its result; events that arrive meanwhile are queued."""
        wanted = self.send(method, params, session)
        while True:
            message = self._read_message()
            if message.get("id") == wanted:
                if "error" in message:
                    raise _Refused(f"Chromium refused {method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def next_event(self, until=None):
        """The next event, queued or new; None once ``until`` has passed."""
        while not self.events:
            message = self._read_message(until)
            if message is None:
                return None
            if "method" in message:  # not a late answer to a command sent without waiting
                return message
        return self.events.pop(0)

    def close(self):
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=5)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # renderers and helpers left behind
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass


def _remote_text(obj):
    """A console argument (a CDP RemoteObject) as text."""
    if "value" in obj:
        return obj["value"] if isinstance(obj["value"], str) else json.dumps(obj["value"])
    return obj.get("description") or obj.get("unserializableValue") or obj.get("type", "?")


def _exception_text(details):
    exc = details.get("exception") or {}
    text = exc.get("description") or details.get("text", "exception")
    where = details.get("url", "")
    if where:
        text = f"{text} (at {where}:{details.get('lineNumber', 0) + 1})"
    return f"uncaught {text}"


class _Recorder:
    """Turns the CDP events of the watched sessions into a PageReport."""

    def __init__(self, browser, report):
        self.browser = browser
        self.report = report
        self.sessions = set()
        self.loaded = False
        # ids of requests, local ones too, not yet finished; a worker's script request starts on
        # the page's session and finishes on the worker's
        self.in_flight = set()

    def watch(self, session, child=False):
        """Enable what we listen to on a session (the page, or a worker or frame of it: those
        lack some domains, which is no error) and attach to whatever it starts."""
        self.sessions.add(session)
        for method, params in (("Network.enable", {}), ("Runtime.enable", {}), ("Log.enable", {}),
                               ("Target.setAutoAttach", {"autoAttach": True, "flatten": True,
                                                         "waitForDebuggerOnStart": True})):
            try:
                self.browser.call(method, params, session=session)
            except _Refused:
                if not child:
                    raise

    def handle(self, event):
        method, params = event["method"], event.get("params", {})
        session = event.get("sessionId")
        if method == "Target.attachedToTarget" and session in self.sessions:
            child = params["sessionId"]
            self.watch(child, child=True)
            self.browser.call("Runtime.runIfWaitingForDebugger", session=child)
            return
        if session not in self.sessions:
            return
        rep = self.report
        if method == "Network.requestWillBeSent":
            self.in_flight.add(params["requestId"])
            url = params["request"]["url"]
            if not url.lower().startswith(_LOCAL_SCHEMES) and url not in rep.requests:
                rep.requests.append(url)
        elif method in ("Network.loadingFinished", "Network.loadingFailed"):
            self.in_flight.discard(params["requestId"])
        elif method == "Network.webSocketCreated":
            if params["url"] not in rep.requests:
                rep.requests.append(params["url"])
        elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            text = " ".join(_remote_text(a) for a in params.get("args", []))
            rep.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            rep.errors.append(_exception_text(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            entry = params["entry"]
            where = f" ({entry['url']})" if entry.get("url") else ""
            rep.errors.append(f"log [{entry.get('source', '?')}]: {entry['text']}{where}")
        elif method == "Page.loadEventFired":
            self.loaded = True
        elif method == "Page.javascriptDialogOpening":
            rep.errors.append(f"javascript {params['type']} dialog: {params['message']}")
            self.browser.send("Page.handleJavaScriptDialog", {"accept": True}, session=session)

    def drain(self):
        while self.browser.events:
            self.handle(self.browser.events.pop(0))


def load_page(html_path, screenshot=None, timeout=60, width=1280, height=900, settle=0.5):
    """Load ``html_path`` in headless Chromium and return a :class:`PageReport`.

    Waits for the load event, listens ``settle`` seconds more for what a page starts late
    (workers, timers), then waits until every ``<img>`` is complete; ``screenshot`` (a path)
    receives a full-page PNG of a ``width`` x ``height`` viewport. Chromium is always killed and
    its temporary profile removed. Raises FileNotFoundError for a missing page or browser, RuntimeError when Chromium dies,
    refuses the page or does not finish within ``timeout`` seconds.
    """
    page = Path(html_path).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no HTML page to load at {page}")
    executable = find_chromium()
    if executable is None:
        chosen = os.environ.get("BIOREPS_CHROMIUM", "").strip()
        if chosen:
            raise FileNotFoundError(f"$BIOREPS_CHROMIUM={chosen!r} is not an executable")
        raise FileNotFoundError("no Chromium found: install the distribution's chromium package, "
                                "or point $BIOREPS_CHROMIUM at a Chromium or Chrome executable")
    report = PageReport(url=page.as_uri())
    workdir = tempfile.mkdtemp(prefix="bioreps-chromium-")
    browser = None
    try:
        browser = _Browser(executable, workdir, time.monotonic() + timeout)
        report.chromium_version = browser.call("Browser.getVersion").get("product", "")
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget",
                               {"targetId": target, "flatten": True})["sessionId"]
        rec = _Recorder(browser, report)
        browser.call("Page.enable", session=session)
        rec.watch(session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        rec.drain()  # nothing of about:blank's counts
        report.requests.clear()
        report.errors.clear()
        nav = browser.call("Page.navigate", {"url": report.url}, session=session)
        if nav.get("errorText"):
            raise RuntimeError(f"Chromium could not open {report.url}: {nav['errorText']}")
        rec.drain()
        browser.stage = f"loading {report.url}"
        while not rec.loaded:
            rec.handle(browser.next_event())
        # then listen for what the page starts late (a worker's script is a blob: request first),
        # longer while requests are in flight, but not forever for one that never ends
        browser.stage = f"listening {settle} s after the load event"
        start = time.monotonic()
        while True:
            now = time.monotonic()
            until = start + settle if now < start + settle else now + 0.05
            if now >= start + 10 * settle or (now >= start + settle and not rec.in_flight):
                break
            event = browser.next_event(until=min(until, start + 10 * settle))
            if event is not None:
                rec.handle(event)
        browser.stage = "waiting for the images"
        while True:
            state = browser.call("Runtime.evaluate", {"expression": _STATE_JS, "awaitPromise": True,
                                                      "returnByValue": True}, session=session)
            rec.drain()
            if "exceptionDetails" in state:
                raise RuntimeError(f"could not inspect {report.url}: "
                                   f"{_exception_text(state['exceptionDetails'])}")
            value = state["result"]["value"]
            # (a late load event of the first about:blank must not pass for the page's)
            if value["pending"] == 0 and value["ready"] == "complete" and value["href"] != "about:blank":
                break
            browser.stage = (f"waiting for {value['pending']} image(s) to load, the document "
                             f"{value['href']} being {value['ready']}")
            time.sleep(0.05)
        report.title = value["title"]
        report.scroll_height = int(value["scroll_height"])
        report.images = value["images"]
        if screenshot is not None:
            browser.stage = "taking the screenshot"
            metrics = browser.call("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            clip = {"x": 0, "y": 0, "width": max(1, size["width"]),
                    "height": max(1, size["height"]), "scale": 1}
            shot = browser.call("Page.captureScreenshot",
                                {"format": "png", "captureBeyondViewport": True, "clip": clip},
                                session=session)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            report.screenshot = str(screenshot)
        rec.drain()
    finally:
        if browser is not None:
            browser.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return report
