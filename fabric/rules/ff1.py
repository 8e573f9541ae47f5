"""FF1 format-preserving encryption (NIST SP 800-38G, algorithms 7 and 8) on AES.

A numeral string over radix 2 to 36 encrypts to another numeral string of the same length and
radix: a 16-digit card number stays 16 digits. Checked against all nine of NIST's FF1 samples.

AES comes from ``cryptography`` (one ECB encryptor per key, used block by block); the PRF is
CBC-MAC as the standard defines it. The first block of the PRF input, P, depends only on the
radix and the string's length, so its encryption is kept per length; with Q one or two blocks
long a Feistel round is then one or two AES blocks and some integer arithmetic.
"""

from __future__ import annotations

import math

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["DIGITS", "FF1"]

#: The numerals of radix up to 36, in order (NIST's radix-36 samples use this alphabet).
DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_ROUNDS = 10


class FF1:
    """FF1 with one AES key (16, 24 or 32 bytes) over numeral strings of one radix."""

    def __init__(self, key: bytes, radix: int) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("FF1 needs an AES key of 16, 24 or 32 bytes")
        if not 2 <= radix <= len(DIGITS):
            raise ValueError(f"FF1 radix must be 2 to {len(DIGITS)}")
        self.radix = radix
        self._aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
        self._numerals = DIGITS[:radix]
        #: (length, tweak length) -> (u, v, b, d, CIPH(P) as an int)
        self._plans: dict[tuple[int, int], tuple[int, int, int, int, int]] = {}

    def min_length(self) -> int:
        """The shortest string FF1 allows for this radix (radix ** length >= 100)."""
        return max(2, math.ceil(math.log(100) / math.log(self.radix)))

    def _block(self, value: int) -> int:
        """One AES block, integers in and out."""
        return int.from_bytes(self._aes.update(value.to_bytes(16, "big")), "big")

    def _plan(self, n: int, t: int) -> tuple[int, int, int, int, int]:
        plan = self._plans.get((n, t))
        if plan is None:
            if n < self.min_length() or n > 2**32 - 1:
                raise ValueError(
                    f"FF1 needs {self.min_length()} or more numerals (radix {self.radix})"
                )
            u, v = n // 2, n - n // 2
            b = math.ceil(math.ceil(v * math.log2(self.radix)) / 8)
            d = 4 * math.ceil(b / 4) + 4
            p = (
                bytes([1, 2, 1])
                + self.radix.to_bytes(3, "big")
                + bytes([10, u % 256])
                + n.to_bytes(4, "big")
                + t.to_bytes(4, "big")
            )
            plan = self._plans[(n, t)] = (u, v, b, d, self._block(int.from_bytes(p, "big")))
        return plan

    def _round_value(self, y0: int, prefix: bytes, i: int, number: int, b: int, d: int) -> int:
        """NUM(S) of one round: CBC-MAC of P || Q (P's block given as ``y0``), expanded."""
        q = prefix + bytes([i]) + number.to_bytes(b, "big")
        y = y0
        for at in range(0, len(q), 16):
            y = self._block(y ^ int.from_bytes(q[at : at + 16], "big"))
        if d <= 16:
            return y >> (8 * (16 - d))
        s = y.to_bytes(16, "big")
        for j in range(1, math.ceil(d / 16)):
            s += self._block(y ^ j).to_bytes(16, "big")
        return int.from_bytes(s[:d], "big")

    def _str(self, value: int, m: int) -> str:
        if self.radix == 10:
            return f"{value:0{m}d}"
        out = []
        for _ in range(m):
            value, digit = divmod(value, self.radix)
            out.append(self._numerals[digit])
        return "".join(reversed(out))

    def _run(self, text: str, tweak: bytes, decrypt: bool) -> str:
        n, t, radix = len(text), len(tweak), self.radix
        u, v, b, d, y0 = self._plan(n, t)
        prefix = tweak + bytes((-t - b - 1) % 16)
        a, bb = text[:u], text[u:]
        try:
            num_a, num_b = int(a, radix), int(bb, radix)
        except ValueError:
            raise ValueError(f"not a string of radix {radix}") from None
        if set(text) - set(self._numerals):
            raise ValueError(f"not a string of radix {radix}")
        mod_u, mod_v = radix**u, radix**v
        if not decrypt:
            for i in range(_ROUNDS):
                y = self._round_value(y0, prefix, i, num_b, b, d)
                m_mod = mod_u if i % 2 == 0 else mod_v
                num_a, num_b = num_b, (num_a + y) % m_mod
            # After ten rounds A holds u numerals and B holds v, as the standard has it.
            return self._str(num_a, u) + self._str(num_b, v)
        for i in reversed(range(_ROUNDS)):
            y = self._round_value(y0, prefix, i, num_a, b, d)
            m_mod = mod_u if i % 2 == 0 else mod_v
            num_a, num_b = (num_b - y) % m_mod, num_a
        return self._str(num_a, u) + self._str(num_b, v)

    def encrypt(self, text: str, tweak: bytes = b"") -> str:
        """Encrypt a numeral string (numerals ``0-9a-z``, the first ``radix`` of them)."""
        return self._run(text, tweak, decrypt=False)

    def decrypt(self, text: str, tweak: bytes = b"") -> str:
        """Decrypt what :meth:`encrypt` returned for the same tweak."""
        return self._run(text, tweak, decrypt=True)
