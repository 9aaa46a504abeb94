#!/usr/bin/env python
"""Check that the built documentation's equations render without a network.

Usage::

    python docs/check_offline_math.py docs/_build/html [--screenshot PATH]

Two checks on the HTML build:

1. no page loads a script or a style sheet from the network (every
   ``<script src>`` and ``<link href>`` is a relative path);
2. the method page, opened from ``file://`` in a headless Chromium whose
   network is cut off (every host resolves to nothing, through a proxy
   that does not exist), ends with every equation typeset by MathJax:
   one ``mjx-container`` per math element of the page, no MathJax error
   and no raw ``\\[`` or ``\\(`` delimiter left in the text.

Without a Chromium (``chromium``, ``chromium-browser``, ``google-chrome``
or ``$CHROMIUM``), the second check is skipped with a message, unless
``--require-browser`` is given. Exits with status 1 and the reasons when
a check fails.
"""

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
METHOD_PAGE = Path("user_guide") / "method.html"
# what Sphinx's math nodes become in the HTML, before MathJax runs
MATH_ELEMENT = re.compile(r'<(?:span|div) class="math notranslate nohighlight"')
REMOTE = re.compile(
    r'<(?:script[^>]*\ssrc|link[^>]*\shref)\s*=\s*["\']((?:[a-z][a-z0-9+.-]*:)?//[^"\']*)',
    re.IGNORECASE,
)


def find_browser():
    """Path of a Chromium executable, or None."""
    candidates = [os.environ.get("CHROMIUM")] + list(BROWSERS)
    for name in filter(None, candidates):
        path = shutil.which(name)
        if path:
            return path
    return None


def remote_references(html_dir):
    """``[(page, url)]`` for every script or style sheet loaded from a network URL."""
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        for url in REMOTE.findall(page.read_text(encoding="utf-8")):
            found.append((page.relative_to(html_dir), url))
    return found


def render_offline(browser, page, screenshot=None, budget_ms=20000):
    """The DOM of ``page`` after its scripts ran, with the network cut off."""
    with tempfile.TemporaryDirectory() as profile:
        common = [
            browser,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # no network: names resolve to nothing and any connection goes
            # to a proxy port that nothing listens on
            "--host-resolver-rules=MAP * ~NOTFOUND",
            "--proxy-server=127.0.0.1:9",
            "--allow-file-access-from-files",
            f"--virtual-time-budget={budget_ms}",
        ]
        url = page.resolve().as_uri()
        dom = subprocess.run(common + ["--dump-dom", url], capture_output=True,
                             text=True, timeout=180)
        if dom.returncode != 0:
            raise RuntimeError(f"{browser} failed ({dom.returncode}):\n{dom.stderr[-2000:]}")
        if screenshot:
            subprocess.run(common + ["--window-size=1280,2400", f"--screenshot={screenshot}",
                                     url], capture_output=True, text=True, timeout=180,
                           check=True)
        return dom.stdout


def math_problems(source_html, dom):
    """Why the equations of ``source_html`` are not rendered in ``dom`` (empty: fine)."""
    problems = []
    expected = len(MATH_ELEMENT.findall(source_html))
    rendered = dom.count("<mjx-container")
    if expected == 0:
        problems.append("the page has no equations: is it the method page?")
    if rendered < expected:
        problems.append(f"{rendered} of {expected} equations were typeset by MathJax")
    errors = dom.count("<mjx-merror")
    if errors:
        problems.append(f"{errors} MathJax errors (mjx-merror) in the page")
    # the text outside tags, where unrendered TeX would show
    text = html.unescape(re.sub(r"<script.*?</script>|<[^>]+>", " ", dom, flags=re.S))
    raw = len(re.findall(r"\\\[|\\\(", text))
    if raw:
        problems.append(f"{raw} raw \\[ or \\( delimiters left in the page's text")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", type=Path, help="the HTML build (sphinx-build -b html)")
    parser.add_argument("--screenshot", help="also save a PNG of the method page here")
    parser.add_argument("--require-browser", action="store_true",
                        help="fail, rather than skip, when no Chromium is found")
    args = parser.parse_args(argv)

    page = args.html_dir / METHOD_PAGE
    if not page.is_file():
        sys.exit(f"no {METHOD_PAGE} under {args.html_dir}: build the HTML first")
    failures = [f"{p} loads {url} from the network"
                for p, url in remote_references(args.html_dir)]

    browser = find_browser()
    if browser is None:
        message = f"no Chromium found ({', '.join(BROWSERS)} or $CHROMIUM)"
        if args.require_browser:
            failures.append(message)
        else:
            print(f"offline math check skipped: {message}")
    else:
        dom = render_offline(browser, page, args.screenshot)
        failures += math_problems(page.read_text(encoding="utf-8"), dom)
        if not failures:
            print(f"offline math check: {dom.count('<mjx-container')} equations of "
                  f"{METHOD_PAGE} typeset by MathJax in {Path(browser).name}, no network")

    if failures:
        print("offline math check failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
