"""Signatures: the Authenticode signature of a PE kernel as ``kexec_kernel_verify_pe_sig`` checks
it, and IMA file signatures (v2 headers) as evmctl checks them. The ASN.1 is read with asn1crypto
and every signature is verified with ``cryptography``; only the byte selection is kimagekit's."""
