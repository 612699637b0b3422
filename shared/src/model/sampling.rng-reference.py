# Reference outputs of splitmix64-seeded xoshiro128** (Blackman & Vigna's C code, transcribed) for
# sampling.test.ts. Re-run: /usr/bin/python3 shared/src/model/sampling.rng-reference.py
M64 = (1 << 64) - 1
M32 = (1 << 32) - 1

def splitmix64_words(seed):
    x = seed & M64
    words = []
    for _ in range(2):
        x = (x + 0x9E3779B97F4A7C15) & M64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z = z ^ (z >> 31)
        words += [z & M32, z >> 32]
    return words

def rotl(x, k):
    return ((x << k) | (x >> (32 - k))) & M32

def xoshiro128ss(s, n):
    out = []
    for _ in range(n):
        out.append((rotl((s[1] * 5) & M32, 7) * 9) & M32)
        t = (s[1] << 9) & M32
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
        s[3] = rotl(s[3], 11)
    return out

for seed in (0, 42, -7):
    print(seed, xoshiro128ss(splitmix64_words(seed), 6))
