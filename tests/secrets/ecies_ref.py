#!/usr/bin/env python3
"""ecies_ref.py - a second, independent implementation of the ECIES v1
envelope (python3-cryptography), used by the interop tests.

  ecies_ref.py keygen            prints "PRIVHEX PUBHEX" (P-256)
  ecies_ref.py seal PUBHEX       stdin plaintext -> stdout envelope
  ecies_ref.py open PRIVHEX      stdin envelope  -> stdout plaintext

Envelope: 0x01 | E (65) | nonce (12) | ciphertext | tag (16);
key = HKDF-SHA256(ECDH x, salt = E || R, info = rama-apple-se-p256-ecies-v1).
"""
import os
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

INFO = b"rama-apple-se-p256-ecies-v1"
X963 = serialization.PublicFormat.UncompressedPoint
RAW = serialization.Encoding.X962


def point(pub):
    return pub.public_bytes(RAW, X963)


def derive(shared, eph, recipient):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient,
                info=INFO).derive(shared)


def seal(pub_hex, pt):
    recipient = bytes.fromhex(pub_hex)
    rkey = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(),
                                                        recipient)
    eph = ec.generate_private_key(ec.SECP256R1())
    e = point(eph.public_key())
    key = derive(eph.exchange(ec.ECDH(), rkey), e, recipient)
    nonce = os.urandom(12)
    return b"\x01" + e + nonce + AESGCM(key).encrypt(nonce, pt, None)


def open_(priv_hex, env):
    if len(env) < 94 or env[0] != 1:
        raise SystemExit("malformed envelope")
    priv = ec.derive_private_key(int(priv_hex, 16), ec.SECP256R1())
    e = env[1:66]
    ekey = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), e)
    key = derive(priv.exchange(ec.ECDH(), ekey), e, point(priv.public_key()))
    return AESGCM(key).decrypt(env[66:78], env[78:], None)


def main():
    cmd = sys.argv[1]
    if cmd == "keygen":
        k = ec.generate_private_key(ec.SECP256R1())
        d = k.private_numbers().private_value.to_bytes(32, "big")
        print(d.hex(), point(k.public_key()).hex())
    elif cmd == "seal":
        sys.stdout.buffer.write(seal(sys.argv[2], sys.stdin.buffer.read()))
    elif cmd == "open":
        sys.stdout.buffer.write(open_(sys.argv[2], sys.stdin.buffer.read()))
    else:
        raise SystemExit("unknown command " + cmd)


if __name__ == "__main__":
    main()
