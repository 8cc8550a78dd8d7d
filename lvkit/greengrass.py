"""The Greengrass side of a model package (:mod:`lvkit.packaging`): the request's configuration and the files.

:class:`GreengrassConfiguration` is StartModelPackagingJob's ``Configuration.Greengrass``, checked
against the API's rules (what each field does in lvkit: :mod:`lvkit.packaging`'s docstring).
:func:`write_package` writes one zip with the standard library's :mod:`zipfile`::

    model/                   a copy of the version's folder
    model/calibration.json   the attached recalibrator, when there is one
    run.py                   :data:`RUNNER`: ``python run.py IMAGE...``
    recipe.yaml              a Greengrass component recipe (:func:`recipe`), written as JSON, which is YAML
    README.txt               what it is and how to run it

The runner loads ``model/`` with :func:`lvkit.backends.load_backend`, through
:class:`lvkit.backends.recalibrated.Recalibrated` when ``model/calibration.json`` is there, as
the service loads a version, and prints for each image the DetectAnomalies answer the service
gives for it. It needs lvkit installed with the extra of the version's backend
(:data:`BACKEND_EXTRAS`), and says which.

Imports ``lvkit.errors``, ``lvkit.shapes`` (the tags' wire form), ``lvkit.storage`` and
``lvkit.validation`` only.
"""

from __future__ import annotations

import json
import os
import re
import string
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lvkit import storage
from lvkit.errors import ValidationException
from lvkit.shapes import tags_from_wire, tags_to_wire
from lvkit.validation import check_s3_location, check_tags

__all__ = ["BACKEND_EXTRAS", "RUNNER", "GreengrassConfiguration", "TargetPlatform", "check_description",
           "install_hint", "recipe", "write_package"]

_COMPONENT_NAME = re.compile(r"[a-zA-Z0-9\-_.]{1,128}")
_COMPONENT_VERSION = re.compile(r"[0-9]{1,6}\.[0-9]{1,6}\.[0-9]{1,6}")
_DESCRIPTION = re.compile(r"[a-zA-Z0-9\-_. ()':,;?]{1,256}")
_DESCRIPTION_RULE = "1 to 256 letters, digits, spaces and -_.()':,;?"
_GREENGRASS = ("CompilerOptions", "TargetDevice", "TargetPlatform", "S3OutputLocation", "ComponentName",
               "ComponentVersion", "ComponentDescription", "Tags")
_NVIDIA_OPTIONS = ("gpu-code", "trt-ver", "cuda-ver")
#: the lvkit extra each backend needs (backends missing here need lvkit alone)
BACKEND_EXTRAS = {"anomalib": "anomalib", "onnx": "onnx", "openvino": "openvino"}
#: Greengrass's architecture names of TargetPlatform's Arch and of TargetDevice
_ARCHITECTURES = {"ARM64": "aarch64", "X86_64": "amd64", "jetson_xavier": "aarch64"}


def check_description(text: object, field_name: str) -> str | None:
    """A ComponentDescription or job Description: 1 to 256 of ``[a-zA-Z0-9-_. ()':,;?]``, or None."""
    if text is not None and (not isinstance(text, str) or not _DESCRIPTION.fullmatch(text)):
        raise ValidationException(f"{field_name} {str(text)[:64]!r} is invalid: {_DESCRIPTION_RULE}")
    return text


def _members(value: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as a JSON object with only ``allowed`` members and every ``required`` one."""
    if value is None:
        raise ValidationException(f"{where} is required")
    if not isinstance(value, dict):
        raise ValidationException(f"{where} must be an object with the members {', '.join(allowed)}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        raise ValidationException(f"{where} has no member {unknown[0][:64]!r}; its members are {', '.join(allowed)}")
    for name in required:
        if value.get(name) is None:
            raise ValidationException(f"{where}.{name} is required")
    return value


def _string(value: dict[str, Any], name: str, where: str) -> str | None:
    got = value.get(name)
    if got is not None and not isinstance(got, str):
        raise ValidationException(f"{where}.{name} must be a string, got {type(got).__name__}")
    return got


@dataclass(frozen=True, slots=True)
class TargetPlatform:
    """TargetPlatform: ``os`` LINUX, ``arch`` ARM64 or X86_64, ``accelerator`` NVIDIA or None (CPU)."""

    os: str
    arch: str
    accelerator: str | None = None


@dataclass(frozen=True, slots=True)
class GreengrassConfiguration:
    """A StartModelPackagingJob ``Configuration.Greengrass`` (what each field does: module docstring).

    Parameters
    ----------
    component_name : str
        ComponentName: 1 to 128 of ``[a-zA-Z0-9-_.]``.
    output : str
        S3OutputLocation as ``s3://bucket/prefix``; in process also a local folder.
    component_version : str, optional
        ``major.minor.patch`` (1 to 6 digits each); default ``<model version>.0.0``.
    component_description, target_device, target_platform, compiler_options, tags
        As the API's members of the same names.

    Examples
    --------
    >>> c = GreengrassConfiguration.from_wire({"Greengrass": {"ComponentName": "line-model",
    ...     "S3OutputLocation": {"Bucket": "edge", "Prefix": "packages/"}}})
    >>> c.output, c.to_wire()["Greengrass"]["S3OutputLocation"]
    ('s3://edge/packages/', {'Bucket': 'edge', 'Prefix': 'packages/'})
    """

    component_name: str
    output: str
    component_version: str | None = None
    component_description: str | None = None
    target_device: str | None = None
    target_platform: TargetPlatform | None = None
    compiler_options: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, configuration: object) -> GreengrassConfiguration:
        """The request's ``Configuration`` (``{"Greengrass": {...}}``); ValidationException when malformed."""
        outer = _members(configuration, "Configuration", ("Greengrass",), ("Greengrass",))
        where = "Configuration.Greengrass"
        g = _members(outer["Greengrass"], where, _GREENGRASS, ("S3OutputLocation", "ComponentName"))
        bucket, prefix = check_s3_location(g["S3OutputLocation"], f"{where}.S3OutputLocation")
        platform = None
        if g.get("TargetPlatform") is not None:
            where_platform = f"{where}.TargetPlatform"
            p = _members(g["TargetPlatform"], where_platform, ("Os", "Arch", "Accelerator"), ("Os", "Arch"))
            platform = TargetPlatform(_string(p, "Os", where_platform) or "", _string(p, "Arch", where_platform) or "",
                                      _string(p, "Accelerator", where_platform))
        return cls(component_name=_string(g, "ComponentName", where) or "", output=storage.s3_uri(bucket, prefix),
                   component_version=_string(g, "ComponentVersion", where),
                   component_description=_string(g, "ComponentDescription", where),
                   target_device=_string(g, "TargetDevice", where), target_platform=platform,
                   compiler_options=_string(g, "CompilerOptions", where),
                   tags=tags_from_wire(g["Tags"]) if g.get("Tags") is not None else {})

    def check(self) -> GreengrassConfiguration:
        """Every field's constraints (ValidationException); returns self."""
        if not isinstance(self.component_name, str) or not _COMPONENT_NAME.fullmatch(self.component_name):
            raise ValidationException(f"ComponentName {str(self.component_name)[:64]!r} is invalid: 1 to 128 ASCII "
                                      "letters, digits, '-', '_' and '.'")
        if self.component_version is not None and (not isinstance(self.component_version, str)
                                                   or not _COMPONENT_VERSION.fullmatch(self.component_version)):
            raise ValidationException(f"ComponentVersion {str(self.component_version)[:64]!r} is invalid: "
                                      "major.minor.patch, each 1 to 6 digits (1.0.0)")
        check_description(self.component_description, "ComponentDescription")
        if self.target_device is not None and self.target_device != "jetson_xavier":
            raise ValidationException(f"TargetDevice {str(self.target_device)[:32]!r} is invalid: the valid value "
                                      "is jetson_xavier")
        if self.target_platform is not None:
            p = self.target_platform
            for name, value, valid in (("Os", p.os, ("LINUX",)), ("Arch", p.arch, ("ARM64", "X86_64")),
                                       ("Accelerator", p.accelerator, (None, "NVIDIA"))):
                if value not in valid:
                    raise ValidationException(f"TargetPlatform.{name} {str(value)[:32]!r} is invalid: valid values "
                                              f"are {', '.join(v for v in valid if v)}")
            if self.target_device is not None:
                raise ValidationException("TargetDevice and TargetPlatform exclude each other: give one of them")
        if self.compiler_options is not None:
            if not isinstance(self.compiler_options, str) or not 3 <= len(self.compiler_options) <= 1024:
                raise ValidationException("CompilerOptions must be 3 to 1024 characters")
            if self.target_device is not None:
                raise ValidationException("CompilerOptions cannot be given with TargetDevice (the device sets them)")
        if self.target_platform is not None and self.target_platform.accelerator == "NVIDIA":
            missing = [o for o in _NVIDIA_OPTIONS if o not in (self.compiler_options or "")]
            if missing:
                raise ValidationException("with Accelerator NVIDIA, CompilerOptions must give gpu-code, trt-ver and "
                                          f"cuda-ver (missing {', '.join(missing)})")
        check_tags(self.tags)
        if not isinstance(self.output, str):
            raise ValidationException("S3OutputLocation is required")
        try:
            if storage.is_s3(self.output):
                bucket, prefix = storage.split_s3(self.output)
                check_s3_location({"Bucket": bucket, "Prefix": prefix}, "S3OutputLocation")
            else:
                storage.resolve(self.output)
        except storage.StorageError as exc:
            raise ValidationException(f"S3OutputLocation: {exc}") from None
        return self

    def to_wire(self) -> dict[str, Any]:
        """``ModelPackagingConfiguration`` (S3OutputLocation only for an ``s3://`` output)."""
        g: dict[str, Any] = {}
        if self.compiler_options is not None:
            g["CompilerOptions"] = self.compiler_options
        if self.target_device is not None:
            g["TargetDevice"] = self.target_device
        if self.target_platform is not None:
            p = self.target_platform
            g["TargetPlatform"] = {"Os": p.os, "Arch": p.arch} | ({"Accelerator": p.accelerator}
                                                                 if p.accelerator else {})
        if storage.is_s3(self.output):
            bucket, prefix = storage.split_s3(self.output)
            g["S3OutputLocation"] = {"Bucket": bucket, "Prefix": prefix}
        g["ComponentName"] = self.component_name
        for name, value in (("ComponentVersion", self.component_version),
                            ("ComponentDescription", self.component_description)):
            if value is not None:
                g[name] = value
        if self.tags:
            g["Tags"] = tags_to_wire(self.tags)
        return {"Greengrass": g}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (how the store keeps it); :meth:`from_dict` takes it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GreengrassConfiguration:
        platform = d.get("target_platform")
        return cls(**{**d, "target_platform": TargetPlatform(**platform) if platform else None})


def install_hint(backend: str) -> str:
    """The pip requirement that runs a version of ``backend``.

    >>> install_hint("anomalib"), install_hint("fake")
    ("'lvkit[anomalib]'", 'lvkit')
    """
    extra = BACKEND_EXTRAS.get(backend)
    return f"'lvkit[{extra}]'" if extra else "lvkit"


RUNNER = string.Template('''"""Run the package of Lookout for Vision model ${project} version ${version}, made by lvkit.

    python run.py [--device auto|cpu|cuda] IMAGE...

prints, for each image in the order given, one line of JSON: the DetectAnomalies answer
{"DetectAnomalyResult": {...}} (AnomalyMask base64), or the error answer {"__type": ...,
"message": ...} for an image that cannot be used (the exit status is then 1). With no image
it loads the model and prints one line saying it is ready.

Needs Python 3.10 or newer and lvkit installed with the extra of this version's backend
(${backend}): pip install ${install}
"""

import argparse
import json
import sys
from pathlib import Path

MODEL = Path(__file__).resolve().parent / "model"
INSTALL = "${install}"


def load(device):
    """The version's backend, through its recalibrator when the package has one."""
    try:
        from lvkit.backends import load_backend

        backend = load_backend(MODEL, device=device)
    except ImportError as exc:
        sys.exit(f"run.py needs lvkit with the ${backend} backend: pip install {INSTALL} ({exc})")
    calibration = MODEL / "calibration.json"
    if calibration.is_file():
        from lvkit.backends.recalibrated import Recalibrated

        backend = Recalibrated(backend, json.loads(calibration.read_text()))
    return backend


def content_type(path, body):
    from lvkit.images import sniff_content_type
    from lvkit.shapes import SUFFIX_TYPES

    return SUFFIX_TYPES.get(path.suffix.lower()) or sniff_content_type(body) or "image/png"


def main(argv=None):
    parser = argparse.ArgumentParser(description="DetectAnomalies on image files with model ${project} ${version}")
    parser.add_argument("images", nargs="*", type=Path, help="PNG or JPEG files")
    parser.add_argument("--device", default="auto", help="where the model runs: auto, cpu or cuda")
    args = parser.parse_args(argv)
    backend = load(args.device)
    if not args.images:
        print(json.dumps({"ProjectName": "${project}", "ModelVersion": "${version}", "Ready": True}), flush=True)
        return 0
    from lvkit.errors import LookoutVisionError

    failed = 0
    for path in args.images:
        try:
            body = path.read_bytes()
            answer = {"DetectAnomalyResult": backend.detect(body, content_type(path, body)).to_json()}
        except OSError as exc:
            answer = {"__type": "ValidationException", "message": f"cannot read {path}: {exc.strerror}"}
        except LookoutVisionError as exc:
            answer = {"__type": exc.code, "message": exc.message}
        failed += "__type" in answer
        print(json.dumps(answer), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
''')

README = string.Template('''Model package of Amazon Lookout for Vision model ${project} version ${version},
made by lvkit (component ${component} ${component_version}).

The service compiled a model into an AWS IoT Greengrass component; lvkit packages the version
as it is instead, with a runner that answers DetectAnomalies as the service did:

  model/                  the model version (lvkit.json holds the decision: thresholds, labels, colours)${calibration}
  run.py                  the runner
  recipe.yaml             a Greengrass component recipe (JSON, which is YAML) whose lifecycle runs run.py
  README.txt              this file

Run it anywhere Python 3.10 or newer runs:

  pip install ${install}
  python run.py image1.png image2.jpg

Each image gives one line of JSON, the DetectAnomalies answer {"DetectAnomalyResult": {...}}
the service gives for it. With no image, run.py loads the model and says it is ready;
--device cpu|cuda chooses where the model runs.

With Greengrass: put this zip where the recipe's artifact Uri says,

  ${package}

then create the component from recipe.yaml and deploy it; set the component's configuration
"Images" to the files to check (the device needs lvkit installed as above). lvkit registered
nothing with Greengrass.
''')


def recipe(config: GreengrassConfiguration, *, project: str, version: int, package_uri: str) -> dict[str, Any]:
    """The Greengrass component recipe of a package (its artifact is the zip at ``package_uri``)."""
    name, component_version = config.component_name, str(config.component_version)
    platform: dict[str, str] = {"os": "linux"}
    target = config.target_device or (config.target_platform.arch if config.target_platform else None)
    if target is not None:
        platform["architecture"] = _ARCHITECTURES[target]
    settings: dict[str, Any] = {"Images": "", "Device": "auto"}
    if config.target_device:
        settings["TargetDevice"] = config.target_device
    if config.target_platform is not None:
        p = config.target_platform
        settings["TargetPlatform"] = {"Os": p.os, "Arch": p.arch} | ({"Accelerator": p.accelerator}
                                                                    if p.accelerator else {})
    if config.compiler_options is not None:
        settings["CompilerOptions"] = config.compiler_options
    folder = "{artifacts:decompressedPath}/" + f"{name}-{component_version}"
    return {
        "RecipeFormatVersion": "2020-01-25",
        "ComponentName": name,
        "ComponentVersion": component_version,
        "ComponentDescription": config.component_description
        or f"Lookout for Vision model {project} version {version}, packaged by lvkit",
        "ComponentPublisher": "lvkit",
        "ComponentConfiguration": {"DefaultConfiguration": settings},
        "Manifests": [{
            "Platform": platform,
            "Lifecycle": {"Run": f"python3 -u {folder}/run.py --device {{configuration:/Device}} "
                                 "{configuration:/Images}"},
            "Artifacts": [{"Uri": package_uri, "Unarchive": "ZIP"}],
        }],
    }


#: the version manifest's fields that name files on the server (the training data); a package leaves them out
_SERVER_PATHS = ("dataset", "splits")


def write_package(path: Path, model_dir: Path, *, project: str, version: int, backend: str,
                  calibration: dict[str, Any] | None, config: GreengrassConfiguration, package_uri: str) -> None:
    """Write the package of the version in ``model_dir`` as the zip ``path``.

    Parameters
    ----------
    path : Path
        The zip to write (replaced if there).
    model_dir : Path
        The version's folder (:meth:`lvkit.store.Store.artifact_dir`).
    project, version, backend
        The version's project, number and backend name.
    calibration : dict or None
        The recalibrator attached to the version.
    config : GreengrassConfiguration
        The job's configuration, ComponentVersion filled in.
    package_uri : str
        Where the zip will be (the recipe's artifact).
    """
    model_dir = Path(model_dir)
    if not (model_dir / "lvkit.json").is_file():
        raise FileNotFoundError(f"model version {version} has no lvkit.json: its folder is incomplete")
    fields = {"project": project, "version": version, "backend": backend, "install": install_hint(backend),
              "component": config.component_name, "component_version": config.component_version,
              "package": package_uri, "calibration": "\n  model/calibration.json  the recalibrator attached to "
              "the version (run.py applies it)" if calibration is not None else ""}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(model_dir):
            dirs.sort()
            for file in sorted(files):
                source = Path(root, file)
                name = "model/" + source.relative_to(model_dir).as_posix()
                if name == "model/lvkit.json":  # without the paths of the server's training images
                    manifest = json.loads(source.read_text())
                    zf.writestr(name, json.dumps({k: v for k, v in manifest.items() if k not in _SERVER_PATHS},
                                                 indent=2))
                else:
                    zf.write(source, name)
        if calibration is not None:
            zf.writestr("model/calibration.json", json.dumps(calibration, indent=2, sort_keys=True))
        zf.writestr("run.py", RUNNER.substitute(fields))
        zf.writestr("recipe.yaml", json.dumps(recipe(config, project=project, version=version,
                                                     package_uri=package_uri), indent=2) + "\n")
        zf.writestr("README.txt", README.substitute(fields))
