"""``kimagekit verify-signature KERNEL --cert CERT... | --keyring DIR``: the kernel's
Authenticode check of a PE kernel against offline trust anchors."""

from __future__ import annotations

from pathlib import Path

import typer

from kimagekit.cli.common import emit_json, input_named, out
from kimagekit.errors import UsageError
from kimagekit.fileio import mapped
from kimagekit.sig.authenticode import verify_buffer
from kimagekit.sig.keys import load_certs


def register(app: typer.Typer) -> None:
    @app.command("verify-signature")
    def verify_signature_cmd(
        kernel: Path = typer.Argument(..., metavar="KERNEL", help="A PE kernel: bzImage, "
                                      "arm64 Image, EFI zboot ('-': stdin)."),
        cert: list[Path] = typer.Option([], "--cert", metavar="CERT", help="A trusted X.509 "
                                        "certificate (PEM or DER), repeatable."),
        keyring: Path | None = typer.Option(None, "--keyring", metavar="DIR", help="A "
                                            "directory of trusted certificates."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable result."),
    ) -> None:
        """Verify the signature as kexec_file_load does (KEXEC_SIG): exit 0 verified, 1 not.

        Example: kimagekit verify-signature /boot/vmlinuz --cert debian-secure-boot-ca.pem"""
        if not cert and keyring is None:
            raise UsageError("give --cert CERT (repeatable) or --keyring DIR")
        trusted = load_certs(list(cert), keyring)
        with input_named(kernel), mapped(kernel) as view:
            result = verify_buffer(view, trusted, str(kernel))
        if as_json:
            emit_json(result)
        else:
            verdict = "verified" if result.verified else "NOT VERIFIED"
            out(f"{kernel}: {verdict}: {result.reason}"
                + (f" (signer {result.signer})" if result.signer else ""))
        if not result.verified:
            raise typer.Exit(1)
