"""The ``KEXEC_SIG`` step of ``kexec_file_load`` for ``build``: with ``KEXEC_SIG_FORCE`` a
kernel whose signature does not verify is refused; without it the kernel loads it anyway and
only notes the failure, which ``build`` turns into a warning."""

from __future__ import annotations

import os
from pathlib import Path

from kimagekit.errors import KimageError, RuleError, input_named
from kimagekit.fileio import mapped
from kimagekit.sig.authenticode import verify_buffer
from kimagekit.sig.keys import load_certs

__all__ = ["FMT", "Pathish", "check_kernel_signature"]

Pathish = str | os.PathLike[str]
FMT = "kexec-sig"


def check_kernel_signature(kernel: Pathish, require: Pathish | None) -> str | None:
    """``require``: a certificate file or a directory of them. Returns a warning for an
    unsigned kernel or one whose image digest does not match its signature (None when neither
    applies); raises :class:`RuleError` when ``require`` is given and the kernel does not
    verify against it, as ``KEXEC_SIG_FORCE`` refuses it."""
    if require is not None:
        p = Path(require)
        trusted = load_certs([], p) if p.is_dir() else load_certs([p])
        with input_named(kernel), mapped(kernel) as view:
            result = verify_buffer(view, trusted, str(kernel))
        if not result.verified:
            err = RuleError(f"signature not verified (KEXEC_SIG_FORCE would refuse it): "
                            f"{result.reason}", fmt=FMT, field="kernel")
            err.file = str(kernel)
            raise err
        return None
    with mapped(kernel) as view:
        try:
            # no trust anchor: only "signed at all" and the image digest can be judged
            result = verify_buffer(view, (), str(kernel))
        except KimageError as err:
            return f"{kernel}: the signature cannot be read: {err}"
    if result.signatures == 0:
        return f"{kernel}: {result.reason}: a KEXEC_SIG_FORCE kernel refuses it"
    if result.image_digest_ok is False:
        return (f"{kernel}: the image digest does not match the signature: a KEXEC_SIG_FORCE "
                "kernel refuses it")
    return None
