'use strict';
// A small seeded random number generator (xoshiro128**, seeded by splitmix64), so a worker's
// episodes and actions follow from the seed the server gives it at registration.

const MASK64 = (1n << 64n) - 1n;

/** splitmix64: a stream of 64-bit BigInts from one 64-bit seed. */
function splitmix64(seed) {
  let state = BigInt.asUintN(64, BigInt(seed));
  return () => {
    state = (state + 0x9e3779b97f4a7c15n) & MASK64;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  };
}

/** Returns a function giving uniform doubles in [0, 1), seeded by `seed` and `stream` (BigInt-able). */
function makeRandom(seed, stream = 0) {
  const next64 = splitmix64(BigInt.asUintN(64, BigInt(seed) * 0x100000001b3n + BigInt(stream)));
  const s = new Uint32Array(4);
  for (let i = 0; i < 4; i += 2) {
    const z = next64();
    s[i] = Number(z & 0xffffffffn);
    s[i + 1] = Number(z >> 32n);
  }
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1;
  const rotl = (x, k) => (x << k) | (x >>> (32 - k));
  const next32 = () => {
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
  // 53 random bits per double.
  return () => ((next32() >>> 5) * 67108864 + (next32() >>> 6)) / 9007199254740992;
}

module.exports = { makeRandom };
