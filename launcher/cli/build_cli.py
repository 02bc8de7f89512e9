"""`ftlaunch build [SPEC]`: build the job image (only if its content tag is missing) and push it, without
launching; and the same step inside a cloud launch (image + job), where it runs before submit.

    ftlaunch build spec.yaml                                  # local image only (--cloud local)
    ftlaunch build --cloud sagemaker spec.yaml                # build if missing, push to its ECR (as a launch does)
    ftlaunch build --registry 127.0.0.1:5000/ml spec.yaml     # any registry (SkyPilot, self-hosted)
    ftlaunch build --dockerfile                               # print the Dockerfile and stop
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from ftlaunch import backends
from ftlaunch.planning.image import build_and_push, configured_registry, describe


@click.command()
@click.argument("spec_path", metavar="[SPEC]", required=False, type=click.Path(dir_okay=False))
@click.option("--cloud", type=click.Choice(backends.NAMES),
              help="Whose registry to push to (default: the spec's resources.cloud; local pushes nothing).")
@click.option("--registry", metavar="HOST[/PATH]",
              help="Push here instead: an ECR, Artifact Registry or ACR address (logged in through the cloud's "
                   "SDK) or any registry the engine is logged in to.")
@click.option("--region", help="Region of the default registry (ECR, Artifact Registry).")
@click.option("--base", "base_image", metavar="IMAGE",
              help="Base image: pytorch (default), sagemaker, or any image with Python >= 3.11 and torch >= 2.5.")
@click.option("--build-network", metavar="NETWORK", help="Network for the build's RUN steps (e.g. host).")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False),
              help="A CA bundle to copy in so pip trusts an intercepting proxy during the build.")
@click.option("--wheelhouse", type=click.Path(exists=True, file_okay=False),
              help="Install the trainer's requirements from these wheels, with no package index.")
@click.option("--dockerfile", "print_dockerfile", is_flag=True, help="Print the Dockerfile and build nothing.")
@click.option("--quiet", "-q", is_flag=True, help="Do not stream the build's output.")
@click.option("--json", "as_json", is_flag=True, help="Print {image, tag, built, pushed, found} as JSON.")
def build(spec_path: str | None, cloud: str | None, registry: str | None, region: str | None,
          base_image: str | None, build_network: str | None, ca_bundle: str | None, wheelhouse: str | None,
          print_dockerfile: bool, quiet: bool, as_json: bool) -> None:
    """Build the job image and push it, without launching. Nothing is built when its tag already exists
    locally or in the registry: the tag is a hash of the Dockerfile, requirements.lock and the trainer."""
    from ftlaunch.containers import image

    options = image.options_from_env(os.environ, base_image=base_image, network=build_network,
                                      ca_bundle=ca_bundle, wheelhouse=wheelhouse)
    if print_dockerfile:
        click.echo(image.dockerfile(options), nl=False)
        return
    spec = _load_spec(spec_path)
    cloud = cloud or (spec.resources.cloud if spec is not None else "local")
    region = region or (spec.resources.region if spec is not None else None)
    result = build_and_push(options, cloud=cloud, registry=registry or configured_registry(cloud), region=region,
                            on_line=None if (quiet or as_json) else (lambda line: click.echo(line, err=True)))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(describe(result))


def _load_spec(spec_path: str | None) -> Any:
    from ftlaunch.core import spec as spec_mod

    path = spec_path or spec_mod.DEFAULT_SPEC
    if spec_path is None and not os.path.exists(path):
        return None  # the image does not depend on the spec; it only says where to push
    return spec_mod.load(path)


