"""Container registries: which cloud a registry host belongs to, and a
login token obtained through that cloud's SDK (ECR via boto3, Artifact Registry via google-auth, ACR via
azure-identity), handed to `docker login --password-stdin`. Any other registry (SkyPilot's) uses the
engine's existing login. SDKs are imported inside the functions; clients can be passed in for tests.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.parse
import urllib.request
from typing import Any

ECR = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
ARTIFACT = re.compile(r"^(?P<location>[a-z0-9-]+)-docker\.pkg\.dev$")
ACR = re.compile(r"^(?P<name>[a-z0-9]+)\.azurecr\.(io|cn|us)$")
ACR_USER = "00000000-0000-0000-0000-000000000000"  # what `az acr login` uses with a refresh token


@dataclasses.dataclass(frozen=True)
class Login:
    registry: str  # the host to log in to
    username: str
    password: str = dataclasses.field(repr=False)


def host(registry: str) -> str:
    """The host part of a registry address: `123.dkr.ecr.us-east-1.amazonaws.com/team` -> the host."""
    return registry.split("://", 1)[-1].split("/", 1)[0]


def kind(registry: str) -> str:
    """ecr, artifact-registry, acr, or other."""
    h = host(registry)
    if ECR.match(h):
        return "ecr"
    if ARTIFACT.match(h) or h in ("gcr.io", "us.gcr.io", "eu.gcr.io", "asia.gcr.io"):
        return "artifact-registry"
    if ACR.match(h):
        return "acr"
    return "other"


def login(registry: str, *, client: Any = None, credential: Any = None) -> Login | None:
    """A login for `registry` from its cloud's SDK; None for other registries (use the engine's own)."""
    which = kind(registry)
    if which == "ecr":
        return ecr_login(registry, client=client)
    if which == "artifact-registry":
        return artifact_registry_login(registry, credentials=credential)
    if which == "acr":
        return acr_login(registry, credential=credential)
    return None


def ecr_login(registry: str, *, client: Any = None) -> Login:
    """ECR's GetAuthorizationToken: base64 'AWS:<password>', valid 12 hours."""
    if client is None:
        import boto3

        client = boto3.client("ecr", region_name=ECR.match(host(registry)).group("region"))
    data = client.get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return Login(registry=host(registry), username=username, password=password)


def artifact_registry_login(registry: str, *, credentials: Any = None) -> Login:
    """An OAuth access token from Application Default Credentials, as user oauth2accesstoken."""
    if credentials is None:
        import google.auth

        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    if not getattr(credentials, "token", None) or not getattr(credentials, "valid", True):
        import google.auth.transport.requests

        credentials.refresh(google.auth.transport.requests.Request())
    return Login(registry=host(registry), username="oauth2accesstoken", password=credentials.token)


def acr_login(registry: str, *, credential: Any = None, opener: Any = None) -> Login:
    """An Entra ID token exchanged at the registry's /oauth2/exchange for an ACR refresh token."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    aad = credential.get_token("https://management.azure.com/.default").token
    h = host(registry)
    body = urllib.parse.urlencode({"grant_type": "access_token", "service": h, "access_token": aad}).encode()
    request = urllib.request.Request(f"https://{h}/oauth2/exchange", data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with (opener or urllib.request.urlopen)(request, timeout=60) as response:
        refresh = json.loads(response.read())["refresh_token"]
    return Login(registry=h, username=ACR_USER, password=refresh)
