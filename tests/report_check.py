"""Checks of a ``snakemake --report`` HTML file: its embedded data, and the page in headless Chromium.

The report is a single-page app: figures are embedded as data URIs in a ``results`` object and
grouped by a ``categories`` object, and React renders the menu from them.  :func:`report_problems`
reads those objects from the file; :func:`chromium_probe` loads the page in headless Chromium with a
small script appended that visits every section, shows every figure through the app's own view
switch and waits for each image to decode, and writes what it saw into the DOM (``--dump-dom``).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def report_data(html: str) -> dict[str, dict]:
    """The report's embedded ``results`` and ``categories`` objects (JSON)."""
    data = {}
    for name in ("results", "categories"):
        match = re.search(rf"var {name} = (\{{.*?\}});\s*</script>", html, re.S)
        if match is None:
            raise AssertionError(f"the report has no embedded '{name}' object: not a Snakemake report?")
        data[name] = json.loads(match.group(1))
    return data


def _payload(data_uri: str) -> bytes:
    header, _, body = data_uri.partition(",")
    return base64.b64decode(body) if header.endswith(";base64") else body.encode()


def report_problems(html_path, required_categories=(), min_figures: int = 1) -> list[str]:
    """What is wrong with a report file, as readable lines (empty list: nothing).

    Checked: every category in ``required_categories`` exists; no category or subcategory is
    empty; every result has a caption; every PNG decodes (signature, more than a header) and every
    HTML item has content; at least ``min_figures`` figures in all.
    """
    data = report_data(Path(html_path).read_text())
    results, categories = data["results"], data["categories"]
    problems = [f"missing report section {name!r}" for name in required_categories if name not in categories]
    for category, subcategories in categories.items():
        if not subcategories:
            problems.append(f"section {category!r} is empty")
        for subcategory, paths in subcategories.items():
            if not paths:
                problems.append(f"section {category!r} / {subcategory!r} is empty")
    figures = 0
    for path, entry in results.items():
        if not entry.get("caption", "").strip():
            problems.append(f"{path}: no caption")
        payload = _payload(entry.get("data_uri", ""))
        if entry["mime_type"] == "image/png":
            figures += 1
            if not payload.startswith(PNG_SIGNATURE) or len(payload) < 1000:
                problems.append(f"{path}: embedded PNG is missing or truncated ({len(payload)} bytes)")
        elif entry["mime_type"] == "text/html" and b"<table" not in payload and b"No rows" not in payload:
            problems.append(f"{path}: embedded HTML has no table")
    if figures < min_figures:
        problems.append(f"{figures} figures in the report, expected at least {min_figures}")
    return problems


def find_chromium() -> str | None:
    """Path of a Chromium executable, or None."""
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


# Appended to the report: record page errors, visit every section, show every figure and wait for
# it to decode, then write the findings into <pre id="critscale-probe"> and show ``show_path``.
PROBE_SCRIPT = """
<script>
(async function () {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const found = { errors: window.__probeErrors, sections: {}, figures: {}, appRendered: false, done: false };
  const out = document.createElement("pre");
  out.id = "critscale-probe";
  out.style.display = "none";
  document.body.appendChild(out);
  const record = () => { out.textContent = JSON.stringify(found); };
  try {
  await sleep(300);
  found.appRendered = document.querySelector("#app").children.length > 0;
  for (const [category, subcategories] of Object.entries(categories)) {
    found.sections[category] = {};
    for (const subcategory of Object.keys(subcategories)) {
      app.setView({ navbarMode: "menu" });
      await sleep(50);
      app.setView({ navbarMode: "subcategory", category: category, subcategory: subcategory });
      await sleep(150);
      found.sections[category][subcategory] = document.querySelectorAll("table tbody tr").length;
      record();
    }
  }
  for (const [path, entry] of Object.entries(results)) {
    if (!entry.mime_type.startsWith("image/")) continue;
    app.setView({ content: "img", contentPath: entry.data_uri, resultPath: path });
    await sleep(100);
    const image = Array.from(document.images).find((img) => img.src === entry.data_uri);
    let size = "not shown";
    if (image) {
      // Poll rather than await image.decode(), which need not settle under virtual time.
      for (let tries = 0; tries < 50 && !(image.complete && image.naturalWidth > 0); tries++) await sleep(100);
      size = image.naturalWidth > 0 ? image.naturalWidth + "x" + image.naturalHeight : "did not decode";
    }
    found.figures[path] = size;
    record();
  }
  const show = SHOW_PATH;
  if (show && results[show]) {
    app.setView({ navbarMode: "menu" });
    await sleep(50);
    for (const [category, subcategories] of Object.entries(categories)) {
      for (const [subcategory, paths] of Object.entries(subcategories)) {
        if (paths.includes(show)) app.setView({ navbarMode: "subcategory", category: category, subcategory: subcategory });
      }
    }
    await sleep(100);
    app.setView({ content: "img", contentPath: results[show].data_uri, resultPath: show });
  }
  found.done = true;
  } catch (error) {
    found.errors.push("probe: " + error);
  }
  record();
})();
</script>
"""
ERROR_HOOK = """<script>window.__probeErrors = [];
window.addEventListener("error", (event) => window.__probeErrors.push(String(event.message)));</script>"""


def _probe_page(html: str, show_path: str | None, folder: Path) -> Path:
    page = html.replace("<head>", "<head>" + ERROR_HOOK, 1)
    end = page.rindex("</body>")  # the last one: embedded libraries and captions contain the string too
    page = page[:end] + PROBE_SCRIPT.replace("SHOW_PATH", json.dumps(show_path)) + page[end:]
    path = folder / "probe.html"
    path.write_text(page)
    return path


def _chromium(executable: str, page: Path, profile: Path, *extra: str, timeout: int = 180) -> str:
    command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=60000",
               *extra, page.as_uri()]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        raise AssertionError(f"chromium failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout


def chromium_probe(html_path, executable: str, screenshot: Path | None = None, show_path: str | None = None) -> dict:
    """Load the report in headless Chromium (fresh profile) and return what the page showed:
    ``appRendered``, ``errors`` (uncaught page errors), ``sections`` (category -> subcategory ->
    number of result rows listed), ``figures`` (path -> ``"WxH"`` decoded size, or why not).
    With ``screenshot``, also save a PNG of the page showing the figure ``show_path``."""
    html = Path(html_path).read_text()
    with tempfile.TemporaryDirectory(prefix="critscale-chromium-") as folder:
        folder = Path(folder)
        page = _probe_page(html, show_path, folder)
        dom = _chromium(executable, page, folder / "profile", "--dump-dom")
        match = re.search(r'<pre id="critscale-probe"[^>]*>(.*?)</pre>', dom, re.S)
        if match is None:
            raise AssertionError("the report page never finished the probe (no result in the DOM); "
                                 f"DOM starts: {dom[:500]!r}")
        found = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                           .replace("&amp;", "&"))
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            _chromium(executable, page, folder / "profile-shot", f"--screenshot={screenshot}",
                      "--window-size=1600,1000")
    return found
