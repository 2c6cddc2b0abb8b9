"""`python -m taskservice.keys`: print a fresh Ed25519 private key (PEM) for TASKSERVICE_JWT_PRIVATE_KEY.

Generate it once and give every worker the same one (a secret store in production): a key per
process would sign tokens the other workers cannot verify (lesson 10, section 3).
"""

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519


def new_private_key_pem() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )


if __name__ == "__main__":
    print(new_private_key_pem(), end="")
