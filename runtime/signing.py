"""Signed bundles: OpenSSF ``model-signing`` with elliptic-curve keys (offline, no Sigstore, no network).

``bundle.sig`` (:data:`~probscale_edge.runtime.bundle.SIGNATURE`) lives in the bundle. It is a Sigstore
bundle (DSSE envelope, in-toto statement) signed with an EC private key (P-256, P-384 or P-521, PEM) over
the sha256 of every other file of the bundle: the model, tokenizer, labels, ``manifest.json`` and
``manifest.sha256``. A file added, removed or changed after signing, or another key, is refused.

    openssl ecparam -name prime256v1 -genkey -noout -out key.pem
    openssl ec -in key.pem -pubout -out key.pub
    sign_bundle("bundle/", "key.pem");  verify_signature("bundle/", "key.pub")

``model_signing`` is imported only here, and only when a function is called: importing the runtime (and
using it without keys) does not need it. Install it with ``pip install 'probscale-edge[sign]'``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from probscale_edge.errors import BundleError, ProbscaleError
from probscale_edge.runtime.bundle import SIGNATURE, _open_regular, _write_atomic, verify_bundle

MAX_SIGNATURE_BYTES = 1 << 20
MAX_KEY_BYTES = 64 << 10
KEY_FIX = ("pass an elliptic-curve key in PEM (P-256/P-384/P-521), e.g. `openssl ecparam -name prime256v1 -genkey "
           "-noout -out key.pem` and `openssl ec -in key.pem -pubout -out key.pub`")


def _model_signing():
    try:
        from model_signing import hashing, signing, verifying
    except ImportError as e:
        raise ProbscaleError(f"signed bundles need the model-signing library ({e.name or e} is not installed)",
                             "pip install 'probscale-edge[sign]'")
    return hashing, signing, verifying


def _hashing_config(hashing):
    """Every file, sha256, no symlinks, nothing ignored but the signature itself (not even .git files)."""
    return (hashing.Config().use_file_serialization(hashing_algorithm="sha256", allow_symlinks=False)
            .set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False))


def _key_file(path, what: str) -> Path:
    p = Path(path)
    if not os.path.lexists(p):
        raise ProbscaleError(f"{what} {p} does not exist", KEY_FIX)
    with _open_regular(p, str(p)) as f:
        if len(f.read(MAX_KEY_BYTES + 1)) > MAX_KEY_BYTES:
            raise ProbscaleError(f"{what} {p} is larger than {MAX_KEY_BYTES >> 10} KB, so it is not a key", KEY_FIX)
    return p


def sign_bundle(bundle, private_key_path, password: str | None = None) -> Path:
    """Sign ``bundle`` with an EC private key (PEM): writes ``bundle/bundle.sig`` (replacing an old one) and
    returns its path. The bundle is verified first: a bundle that does not match its manifest is not signed."""
    hashing, signing, _ = _model_signing()
    bundle = Path(bundle)
    verify_bundle(bundle, public_key=False)
    key = _key_file(private_key_path, "private key")
    try:
        cfg = signing.Config().use_elliptic_key_signer(private_key=key, password=password)
    except (ValueError, TypeError) as e:
        raise ProbscaleError(f"private key {key} cannot be used ({str(e).splitlines()[0][:160]})", KEY_FIX)
    with tempfile.TemporaryDirectory(prefix="probscale-sign-") as tmp:  # outside the bundle: it is being hashed
        cfg.set_hashing_config(_hashing_config(hashing)).sign(bundle, Path(tmp) / SIGNATURE)
        _write_atomic(bundle / SIGNATURE, (Path(tmp) / SIGNATURE).read_bytes())
    return bundle / SIGNATURE


def check_signature(bundle, public_key_path) -> None:
    """The signature check alone (``verify_bundle`` calls it after its own checks of the same bundle)."""
    hashing, _, verifying = _model_signing()
    bundle = Path(bundle)
    key = _key_file(public_key_path, "public key")
    sig = bundle / SIGNATURE
    if not os.path.lexists(sig):
        raise BundleError(f"bundle {bundle} is not signed (no {SIGNATURE}) but a public key is configured ({key})",
                          "use a bundle signed with `probscale-edge sign BUNDLE --key KEY`, or give no public key")
    with _open_regular(sig, SIGNATURE) as f:
        if len(f.read(MAX_SIGNATURE_BYTES + 1)) > MAX_SIGNATURE_BYTES:
            raise BundleError(f"{SIGNATURE} is larger than {MAX_SIGNATURE_BYTES >> 20} MB", "sign the bundle again")
    try:
        cfg = verifying.Config().use_elliptic_key_verifier(public_key=key)
    except (ValueError, TypeError) as e:
        raise ProbscaleError(f"public key {key} cannot be used ({str(e).splitlines()[0][:160]})", KEY_FIX)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints warnings about old signatures
            cfg.set_hashing_config(_hashing_config(hashing)).verify(bundle, sig)
    except Exception as e:  # noqa: BLE001 - bad signature, other key, altered files, malformed bundle.sig
        why = "the files changed after signing" if "Signature mismatch" in str(e) else \
            "it was made with another key, or is damaged"
        raise BundleError(f"{SIGNATURE} of bundle {bundle} does not verify with public key {key} ({why})",
                          "use the bundle as its publisher signed it, or the publisher's public key")


def verify_signature(bundle, public_key_path) -> dict:
    """Verify ``bundle`` (checksums, manifest digest, layout) and its ``bundle.sig`` with an EC public key (PEM);
    returns the manifest. Refuses an unsigned bundle, another key's signature, or any change after signing."""
    if not public_key_path:
        raise ProbscaleError("verify_signature needs a public key", KEY_FIX)
    return verify_bundle(bundle, public_key=public_key_path)
