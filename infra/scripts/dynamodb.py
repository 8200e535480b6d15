"""The local stack's DynamoDB: moto's emulator, one request at a time.

DynamoDB applies each conditional write atomically. moto reads the item,
evaluates the condition and writes in separate steps, so on its threaded
server two concurrent requests can both pass one condition (an eleventh
request through a rate limit of ten, two claims of one idempotency key).
Handling requests one by one restores DynamoDB's guarantee, which the rate
limits, idempotency keys and webhook replay records rely on.

Usage: python dynamodb.py [--host 127.0.0.1] [--port 5001]
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args()

    moto = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def one_at_a_time(environ, start_response):
        with lock:
            return list(moto(environ, start_response))

    run_simple(args.host, args.port, one_at_a_time, threaded=True)


if __name__ == "__main__":
    main()
