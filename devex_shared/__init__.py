"""What the core (``devex``, ``jobs``) and the runner inside every REPL both need.

The signed token format (``access_tokens``), storage backends and their directory sync
(``storage``), and credential redaction (``redact``). The runner image ships this package
whole, so it imports only the standard library, itsdangerous and boto3: never ``devex``,
Flask, Redis, rq or Kubernetes (tests/test_devex_shared.py checks it).
"""
