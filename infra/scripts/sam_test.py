"""The checks of `make sam-test` (run by infra/scripts/sam.sh test, which sets up what they need).

Starts `sam local start-lambda` and `sam local start-api` with warm containers
(one container per function, reused: a container start costs 8-16 s here),
then checks:
- every event of events/manifest.json, invoked through start-lambda: its status code;
- that the checker itself fails an event whose expected status is wrong;
- through start-api: GET /api/v1/models; a sync POST /api/v1/generate (201, the
  image downloads from this host); an async one completed by the simulator's
  webhook delivered to start-api, exactly once (a redelivery changes nothing).
Prints one line per check and `N passed, M failed`; exits 1 on any failure.

Arguments: the `sam local` options (template, env vars, region, parameters).
SAM_TEST_MANIFEST replaces events/manifest.json (to see the checker fail).
"""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEV = os.path.join(ROOT, ".dev")
ENV = dict(
    line.split("=", 1)
    for line in open(os.path.join(DEV, "local.env")).read().splitlines()
    if "=" in line
)
SAM_ARGS = sys.argv[1:]
LAMBDA = f"http://127.0.0.1:{ENV['SAM_LAMBDA_PORT']}"
API = f"http://127.0.0.1:{ENV['SAM_API_PORT']}"
SIM = f"http://127.0.0.1:{ENV['SAM_SIM_PORT']}"
CORS_ORIGIN = os.environ.get("SAM_CORS_ORIGIN", "http://localhost:5173")
DB = ENV["TEST_DATABASE_URL"]  # sam.sh test points the functions at the tests' own store

# Longer than any function's Timeout in template.yaml (120 s at most, but for migrate)
# plus a container's start: the checker never gives up on an invocation SAM still runs.
INVOKE_TIMEOUT = 180
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else f': {detail}'}", flush=True)


def http(method, url, body=None, headers=None, timeout=90):
    """(status, headers, body bytes) of a request; HTTP errors are answers too."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as res:
            return res.status, res.headers, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def token(user):
    return subprocess.run(
        os.environ["SAM_TOKEN_CMD"].split() + [str(user)],
        check=True, capture_output=True, text=True,
    ).stdout.strip().splitlines()[-1]


def sql(query):
    return subprocess.run(
        ["psql", DB, "-Atqc", query], check=True, capture_output=True, text=True
    ).stdout.strip()


def start(command, port):
    log = open(os.path.join(DEV, "logs", f"sam-{command}.log"), "w")
    proc = subprocess.Popen(
        ["sam", "local", command, "--port", port, "--warm-containers", "LAZY", *SAM_ARGS],
        stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )
    for _ in range(600):
        if proc.poll() is not None:
            sys.exit(f"sam local {command} stopped; see .dev/logs/sam-{command}.log")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except urllib.error.HTTPError:
            return proc  # it answers
        except OSError:
            time.sleep(0.2)
    sys.exit(f"sam local {command} did not listen on :{port}; see .dev/logs/sam-{command}.log")


def running_generation(tok):
    """A generation of the token's user that keeps running ([sim:hang]), for the samples
    that name one (RUNNING_GENERATION_ID): started through the generate function."""
    with open(os.path.join(ROOT, "events", "generate-async.json")) as f:
        event = json.loads(f.read().replace("DEV_TOKEN", tok))
    event["body"] = json.dumps({"prompt": "running sample [sim:hang]"})
    status, _, body = http(
        "POST", f"{LAMBDA}/2015-03-31/functions/GenerateFunction/invocations", json.dumps(event).encode()
    )
    answer = json.loads(json.loads(body)["body"]) if status == 200 else {}
    return answer.get("generationId", "not-started")


def invoke(entry, tok, running):
    """Status code of one manifest event through start-lambda (200 for a job that succeeded)."""
    with open(os.path.join(ROOT, "events", entry["file"])) as f:
        event = f.read().replace("DEV_TOKEN", tok).replace("RUNNING_GENERATION_ID", running)
    logical = entry["function"].capitalize() + "Function"
    status, headers, body = http(
        "POST", f"{LAMBDA}/2015-03-31/functions/{logical}/invocations", event.encode(),
        timeout=INVOKE_TIMEOUT,
    )
    if status != 200 or headers.get("X-Amz-Function-Error"):
        return None, body[:300]
    answer = json.loads(body or b"null")
    if entry["function"] in ("reconcile", "thumbnails"):
        return 200, answer
    return answer.get("statusCode"), answer.get("body", "")[:300]


def events():
    manifest_file = os.environ.get("SAM_TEST_MANIFEST") or os.path.join(ROOT, "events", "manifest.json")
    with open(manifest_file) as f:
        manifest = json.load(f)
    tok = token(uuid.uuid4())
    running = running_generation(tok)
    for entry in manifest:
        status, detail = invoke(entry, tok, running)
        check(
            f"invoke {entry['file']} -> {entry['status']}",
            status == entry["status"],
            f"got {status}: {detail}",
        )
    # The checker must notice a wrong expectation: the first event, expecting another status.
    wrong = dict(manifest[0], status=manifest[0]["status"] + 1)
    status, _ = invoke(wrong, tok, running)
    check(
        f"checker fails {wrong['file']} when the manifest expects {wrong['status']}",
        status is not None and status != wrong["status"],
        f"got {status}",
    )


def preflights():
    """API Gateway answers CORS preflights itself (the template's CorsConfiguration, from
    CorsOrigins, which sam.sh sets to SAM_CORS_ORIGIN); no function runs for them."""
    ask = {"Origin": CORS_ORIGIN, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}
    status, headers, body = http("OPTIONS", f"{API}/api/v1/generate", headers=ask)
    allowed = headers.get("access-control-allow-origin") if headers else None
    check("start-api OPTIONS /api/v1/generate from an allowed origin -> a CORS preflight answer",
          status in (200, 204) and allowed == CORS_ORIGIN
          and "POST" in (headers.get("access-control-allow-methods") or ""),
          f"{status} {dict(headers or {})} {body[:200]}")
    status, headers, body = http("OPTIONS", f"{API}/api/v1/generate",
                                 headers={**ask, "Origin": "https://evil.example.com"})
    check("start-api OPTIONS from another origin -> no allow-origin",
          not (headers or {}).get("access-control-allow-origin"), f"{status} {dict(headers or {})}")


def api():
    status, _, body = http("GET", f"{API}/api/v1/models")
    models = json.loads(body) if status == 200 else None
    check("start-api GET /api/v1/models -> 200, a list of models",
          isinstance(models, list) and len(models) > 0, f"{status} {body[:200]}")

    auth = {"Authorization": f"Bearer {token(uuid.uuid4())}", "content-type": "application/json"}
    status, _, body = http("POST", f"{API}/api/v1/generate",
                           {"prompt": "a lighthouse at dawn", "waitForResult": True}, auth)
    answer = json.loads(body or b"{}")
    url = (answer.get("image") or {}).get("url")
    check("start-api POST /api/v1/generate (sync) -> 201 with an image", status == 201 and url,
          f"{status} {body[:300]}")
    if url:
        got, headers, data = http("GET", url)
        check("the image URL opens from the host", got == 200 and len(data) > 0
              and headers.get("content-type", "").startswith("image/"),
              f"{got} {headers.get('content-type')} {len(data)} bytes from {url[:80]}")

    # Async: the simulator completes the prediction and POSTs the webhook to
    # start-api; nobody asks for the status meanwhile, so only the webhook can
    # complete the generation.
    status, _, body = http("POST", f"{API}/api/v1/generate", {"prompt": "a fox in the snow"}, auth)
    gen = json.loads(body or b"{}").get("generationId")
    check("start-api POST /api/v1/generate (async) -> 202", status == 202 and gen,
          f"{status} {body[:300]}")
    if not gen:
        return
    prediction = sql(f"select prediction_id from generations where id = '{gen}'")
    deliveries = []
    for _ in range(120):
        _, _, body = http("GET", f"{SIM}/_sim/predictions/{prediction}/deliveries")
        deliveries = [d for d in json.loads(body) if d["event"] == "completed"]
        if deliveries:
            break
        time.sleep(0.5)
    check("the simulator's webhook reached start-api (200)",
          [d["status"] for d in deliveries] == [200], f"deliveries {deliveries}")
    state = sql(f"select status, completed_at from generations where id = '{gen}'")
    check("the webhook completed the generation", state.startswith("completed|"), state)
    status, _, body = http("POST", f"{SIM}/_sim/predictions/{prediction}/redeliver")
    again = sql(f"select status, completed_at from generations where id = '{gen}'")
    images = sql(f"select count(*) from images where generation_id = '{gen}'")
    check("a redelivered webhook changes nothing (completed once, one image)",
          json.loads(body).get("status") == 200 and again == state and images == "1",
          f"redelivery {body[:100]}, before {state}, after {again}, images {images}")
    status, _, body = http("GET", f"{API}/api/v1/generate/{gen}/status", headers=auth)
    check("start-api GET /api/v1/generate/{id}/status -> completed",
          status == 200 and json.loads(body).get("status") == "completed", f"{status} {body[:200]}")


def main():
    procs = [start("start-lambda", ENV["SAM_LAMBDA_PORT"]), start("start-api", ENV["SAM_API_PORT"])]
    try:
        events()
        preflights()
        api()
    finally:
        for proc in procs:
            proc.terminate()  # SAM stops its warm containers on SIGTERM
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    failed = results.count(False)
    print(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
