"""Credential services on loopback, speaking the real wire protocols: an EC2 instance
metadata service (IMDSv2 tokens, IMDSv1 if asked) and an ECS/EKS container credentials
endpoint. Both hand out what an `Issuer` makes: credentials that expire within a test.

`MotoIssuer` makes real ones, on a moto server that checks signatures: each issue is a
new IAM user's access key, deleted (so moto refuses it, InvalidAccessKeyId) when it
"expires" — or earlier, to see a refusal cured by a refresh. moto's own STS credentials
cannot be revoked or expired (moto never checks an expiry), hence IAM users; and as moto
refuses an IAM user's key sent with a session token (InvalidToken), these come without
one (the Token field is empty).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from run_s3fs.devserver import S3Server, start_moto, stop_moto


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Issued:
    access_key: str
    secret_key: str
    token: str
    expiry: float

    def document(self) -> dict[str, str]:
        return {
            "Code": "Success",
            "Type": "AWS-HMAC",
            "AccessKeyId": self.access_key,
            "SecretAccessKey": self.secret_key,
            "Token": self.token,
            "Expiration": iso(self.expiry),
            "LastUpdated": iso(time.time()),
        }


class Issuer:
    """Fixed keys with a new token and an expiry `lifetime` seconds ahead (for servers
    that accept any keys)."""

    def __init__(self, access_key: str, secret_key: str, lifetime: float = 3600) -> None:
        self.access_key, self.secret_key, self.lifetime = access_key, secret_key, lifetime
        self.issued: list[Issued] = []
        self._lock = threading.Lock()

    def issue(self) -> Issued:
        with self._lock:
            n = len(self.issued)
            creds = Issued(
                self.access_key,
                self.secret_key,
                f"token-{n}-" + "x" * 40,
                time.time() + self.lifetime,
            )
            self.issued.append(creds)
            return creds

    def close(self) -> None:
        pass


class MotoIssuer(Issuer):
    """Real credentials on an authenticating moto: a new IAM user (allowed s3:*) and key
    per issue, the key deleted `revoke_after` seconds later (default: at its expiry)."""

    def __init__(
        self, server: S3Server, admin: Any, lifetime: float, revoke_after: float | None = None
    ) -> None:
        super().__init__("", "", lifetime)
        self.server, self.admin = server, admin
        self.revoke_after = lifetime if revoke_after is None else revoke_after
        self.revoked: list[str] = []
        self._timers: list[threading.Timer] = []
        self._prefix = f"holder-{uuid.uuid4().hex[:8]}"

    def issue(self) -> Issued:
        with self._lock:
            n = len(self.issued)
            user = f"{self._prefix}-{n}"
            self.admin.create_user(UserName=user)
            self.admin.put_user_policy(
                UserName=user,
                PolicyName="s3",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                    }
                ),
            )
            key = self.admin.create_access_key(UserName=user)["AccessKey"]
            creds = Issued(
                key["AccessKeyId"],
                key["SecretAccessKey"],
                "",
                time.time() + self.lifetime,
            )
            self.issued.append(creds)
            if self.revoke_after <= 0:  # already "expired" when handed out
                self._revoke(user, creds.access_key)
                return creds
            timer = threading.Timer(self.revoke_after, self._revoke, (user, creds.access_key))
            timer.daemon = True
            timer.start()
            self._timers.append(timer)
            return creds

    def _revoke(self, user: str, access_key: str) -> None:
        try:
            self.admin.delete_access_key(UserName=user, AccessKeyId=access_key)
            self.revoked.append(access_key)
        except Exception:  # the server is going away at the end of a test
            pass

    def revoke_all(self) -> None:
        for n, creds in enumerate(list(self.issued)):
            self._revoke(f"{self._prefix}-{n}", creds.access_key)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()


@dataclass
class IamMoto:
    """A moto server that authenticates every request, with an `admin` user (allowed *)
    whose IAM client makes the issued credentials, and `bucket` created."""

    server: S3Server
    bucket: str
    admin_access_key: str
    admin_secret_key: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.server.url,
            region_name="us-east-1",
            aws_access_key_id=self.admin_access_key,
            aws_secret_access_key=self.admin_secret_key,
        )


@contextmanager
def iam_moto(log_dir: Path, bucket: str = "creds-bucket") -> Iterator[IamMoto]:
    import urllib.request

    import boto3

    server = start_moto(log_dir, env_extra={"INITIAL_NO_AUTH_ACTION_COUNT": "1000"})
    try:

        def unchecked(service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=server.url,
                region_name="us-east-1",
                aws_access_key_id="AKIASETUPSETUPSETUP0",
                aws_secret_access_key="setup" * 8,
            )

        iam = unchecked("iam")
        iam.create_user(UserName="admin")
        iam.put_user_policy(
            UserName="admin",
            PolicyName="all",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        unchecked("s3").create_bucket(Bucket=bucket)
        req = urllib.request.Request(f"{server.url}/moto-api/reset-auth", data=b"0", method="POST")
        req.add_header("Content-Type", "text/plain")
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
        yield IamMoto(server, bucket, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        stop_moto(server)


# --- the HTTP services --------------------------------------------------------------------


@dataclass
class _Service:
    issuer: Issuer
    requests: list[str] = field(default_factory=list)  # "METHOD path", in order
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def credential_fetches(self) -> int:
        return sum(1 for r in self.requests if r.startswith("GET") and self._is_credentials(r))

    def _is_credentials(self, request: str) -> bool:
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.issuer.close()


@dataclass
class ImdsServer(_Service):
    """IMDS: PUT /latest/api/token, then GET .../iam/security-credentials/[ROLE] with the
    token. `v1_only`: the token PUT is refused (404), as an IMDSv1-only service does;
    `require_token`: IMDSv2 only (GETs without a token get 401)."""

    role: str = "app-role"
    v1_only: bool = False
    require_token: bool = True
    delay: float = 0.0  # seconds before each credentials answer (a slow service)
    tokens: set[str] = field(default_factory=set)

    def _is_credentials(self, request: str) -> bool:
        return request.endswith(f"/security-credentials/{self.role}")


@dataclass
class ContainerServer(_Service):
    """ECS/EKS container credentials: GET PATH, with `Authorization: TOKEN` if a token is set."""

    path: str = "/v2/credentials/task-1"
    token: str | None = None


def _serve(service: _Service, handler: type[BaseHTTPRequestHandler]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    service.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()


def start_imds(issuer: Issuer, **kwargs: Any) -> ImdsServer:
    service = ImdsServer(issuer, **kwargs)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self) -> None:
            service.requests.append(f"PUT {self.path}")
            if self.path != "/latest/api/token" or service.v1_only:
                self._send(404, b"")
                return
            if not self.headers.get("x-aws-ec2-metadata-token-ttl-seconds"):
                self._send(400, b"")
                return
            token = f"imds-token-{len(service.tokens)}"
            service.tokens.add(token)
            self._send(200, token.encode())

        def do_GET(self) -> None:
            service.requests.append(f"GET {self.path}")
            token = self.headers.get("x-aws-ec2-metadata-token")
            if service.require_token and not service.v1_only and token not in service.tokens:
                self._send(401, b"")
                return
            base = "/latest/meta-data/iam/security-credentials/"
            if self.path == base:
                self._send(200, service.role.encode())
            elif self.path == base + service.role:
                time.sleep(service.delay)
                doc = service.issuer.issue().document()
                self._send(200, json.dumps(doc).encode(), "application/json")
            else:
                self._send(404, b"")

    _serve(service, Handler)
    return service


def start_container(issuer: Issuer, **kwargs: Any) -> ContainerServer:
    service = ContainerServer(issuer, **kwargs)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            service.requests.append(f"GET {self.path}")
            if service.token is not None and self.headers.get("Authorization") != service.token:
                status, body = 401, b'{"Code":"Unauthorized"}'
            elif self.path != service.path:
                status, body = 404, b'{"Code":"NotFound"}'
            else:
                status, body = 200, json.dumps(service.issuer.issue().document()).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    _serve(service, Handler)
    return service
