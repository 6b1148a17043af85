"""CPU instructions per request in the app's worker: the bare endpoint's 200 beside smsguard's
denial in the bombing flood, for each framework (issue 23).

``web.py`` times the flood through wrk and a real server, where a single round moves by
hundreds of µs with the machine's load; this counts what the app itself spends on a request,
by valgrind's callgrind (``instructions.py``: 200 and 1,200 requests in two processes, the
difference over 1,000; timed instead where valgrind is absent, and said). Each request is
made in-process, with no server: a WSGI environ handed to the Flask or Django app (werkzeug's
ProxyFix around both, as under gunicorn in ``web.py``), an ASGI scope run to its end on an
event loop for Starlette and FastAPI (the client's address in the scope, as uvicorn puts it
there from X-Forwarded-For). The apps are ``web_apps.py``'s, on the memory backend: the
victim's first request is admitted, every later one is denied by its same-content and hourly
limits, from one of 1,000 addresses in turn. The overhead is the denial's cost over the bare
endpoint's (which validates the number and answers 200). (No baseline revision here: the code
issue 23 was filed against denied a flood on Redis by a round trip, which no in-process memory
run shows; ``web.py`` compares with it.)

    python benchmarks/web_cost.py [--frameworks flask,django] [--runs 3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from instructions import available, compare

_IPS = "IPS = [f'10.1.{a // 256}.{a % 256}' for a in range(1000)]\n"
_QUERY = "phone=13800138000"

_WSGI = (
    "import io, os\n"
    "os.environ.update(BENCH_VARIANT=VARIANT, BENCH_FRAMEWORK=FRAMEWORK)\n"
    "import web_apps\n"
    "app = getattr(web_apps, FRAMEWORK)\n"
    + _IPS
    + "E = {'REQUEST_METHOD': 'POST', 'SCRIPT_NAME': '', 'PATH_INFO': '/sms/send',\n"
    f"     'QUERY_STRING': {_QUERY!r}, 'SERVER_NAME': '127.0.0.1', 'SERVER_PORT': '8000',\n"
    "     'SERVER_PROTOCOL': 'HTTP/1.1', 'REMOTE_ADDR': '127.0.0.1', 'REMOTE_PORT': '40000',\n"
    "     'HTTP_HOST': '127.0.0.1:8000', 'HTTP_USER_AGENT': 'wrk', 'CONTENT_LENGTH': '0',\n"
    "     'wsgi.url_scheme': 'http', 'wsgi.version': (1, 0), 'wsgi.errors': io.StringIO(),\n"
    "     'wsgi.multithread': False, 'wsgi.multiprocess': False, 'wsgi.run_once': False}\n"
    "STATUS = []\n"
    "def start_response(status, headers, exc_info=None):\n"
    "    STATUS.append(status)\n"
    "def request(i):\n"
    "    environ = dict(E)\n"
    "    environ['wsgi.input'] = io.BytesIO(b'')\n"
    "    environ['HTTP_X_FORWARDED_FOR'] = IPS[i % 1000]\n"
    "    body = app(environ, start_response)\n"
    "    b''.join(body)\n"
    "    close = getattr(body, 'close', None)\n"
    "    if close is not None:\n"
    "        close()\n"
)

_ASGI = (
    "import asyncio, os\n"
    "os.environ.update(BENCH_VARIANT=VARIANT, BENCH_FRAMEWORK=FRAMEWORK)\n"
    "import web_apps\n"
    "app = getattr(web_apps, FRAMEWORK)\n" + _IPS + "loop = asyncio.new_event_loop()\n"
    "HEADERS = [(b'host', b'127.0.0.1:8000'), (b'user-agent', b'wrk'), (b'content-length', b'0')]\n"
    "STATUS = []\n"
    "async def receive():\n"
    "    return {'type': 'http.request', 'body': b'', 'more_body': False}\n"
    "async def send(message):\n"
    "    if message['type'] == 'http.response.start':\n"
    "        STATUS.append(message['status'])\n"
    "def request(i):\n"
    "    scope = {'type': 'http', 'asgi': {'version': '3.0'}, 'http_version': '1.1',\n"
    "             'method': 'POST', 'scheme': 'http', 'path': '/sms/send', 'raw_path': b'/sms/send',\n"
    f"             'query_string': {_QUERY.encode()!r}, 'root_path': '',\n"
    "             'headers': [*HEADERS, (b'x-forwarded-for', IPS[i % 1000].encode())],\n"
    "             'client': (IPS[i % 1000], 40000), 'server': ('127.0.0.1', 8000)}\n"
    "    loop.run_until_complete(app(scope, receive, send))\n"
)


def cases(framework: str) -> dict[str, tuple[str, str]]:
    setup = _ASGI if framework in ("starlette", "fastapi") else _WSGI
    out = {}
    for variant, name in [("bare", "bare 200"), ("smsguard", "smsguard denial")]:
        head = f"VARIANT, FRAMEWORK = {variant!r}, {framework!r}\n"
        out[f"{framework}: {name}"] = (head + setup + "request(0)\n", "request(i + 1)")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="starlette,flask,fastapi,django")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    frameworks = args.frameworks.split(",")
    costs = compare({name: case for f in frameworks for name, case in cases(f).items()}, runs=args.runs)
    unit = next(iter(costs.values())).unit
    how = "callgrind" if available() else "TIMED (no valgrind)"
    print(f"in-process request, bombing flood on memory: one victim, 1,000 addresses; {how}, "
          f"(I(1200) - I(200)) / 1000; {args.runs} runs")  # fmt: skip
    per = "instructions/request" if unit == "instructions" else "ns/request (timed)"
    print(f"{'':12}{'bare 200':>12}{'denial':>12}{'over bare':>12}{'spread':>9}   ({per}, medians)")
    for f in frameworks:
        bare, denial = costs[f"{f}: bare 200"], costs[f"{f}: smsguard denial"]
        spread = max(bare.spread, denial.spread)
        print(f"{f:12}{bare.median:>12,.0f}{denial.median:>12,.0f}{denial.median - bare.median:>+12,.0f}"
              f"{spread:>9.1%}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
