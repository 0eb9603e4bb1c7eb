"""The starting state of ``numpy.random.PCG64(numpy.random.SeedSequence(entropy))``, computed in C.

gdcode draws a delay (and a minibatch) from its own stream per (seed, worker, iteration):
``numpy.random.default_rng([seed, tag, worker, iteration])``. numpy builds such a generator in
about 12 us (warm, in a loop), and several times that in a rank whose caches 48 other ranks
have just used, which on 2 cores delays every worker's start of an iteration. Here the same seed sequence
(numpy's SeedSequence: hash the words into a pool of four, then draw the state from the
pool) and PCG64's seeding run in C, and :class:`gdcode.streams.Reseeded` sets the result
on one reused generator: the same numbers as numpy's, for a fraction of the work.

    pcg64_state(entropy) -> (state, inc)

``entropy`` is a sequence of non-negative integers below 2**64 (at most 8 of them; anything but
an integer raises ``TypeError``, as numpy does); the result
is ``PCG64(SeedSequence(entropy)).state["state"]``'s ``state`` and ``inc``. Larger or more
integers raise ``OverflowError`` (the numpy twin, :func:`gdcode.kernels.reference.pcg64_state`,
takes any). It needs a C compiler with ``unsigned __int128`` (GCC, Clang). numpy documents
SeedSequence and PCG64's seeding as stable across its versions; a test compares the two on many
inputs.
"""

from operator import index

from libc.stdint cimport uint32_t, uint64_t

cdef extern from *:
    """
    typedef unsigned __int128 gd_u128;
    static inline gd_u128 gd_u128_of(uint64_t hi, uint64_t lo) { return ((gd_u128)hi << 64) | lo; }
    static inline uint64_t gd_u128_hi(gd_u128 x) { return (uint64_t)(x >> 64); }
    static inline uint64_t gd_u128_lo(gd_u128 x) { return (uint64_t)x; }
    """
    ctypedef struct gd_u128:
        pass
    gd_u128 gd_u128_of(uint64_t hi, uint64_t lo) nogil
    uint64_t gd_u128_hi(gd_u128 x) nogil
    uint64_t gd_u128_lo(gd_u128 x) nogil

cdef extern from *:
    """
    /* PCG64's step, state = state * multiplier + inc (mod 2**128), on the 128-bit type above */
    static inline gd_u128 gd_pcg_step(gd_u128 state, gd_u128 inc) {
        const gd_u128 mult = ((gd_u128)2549297995355413924ULL << 64) | 4865540595714422341ULL;
        return state * mult + inc;
    }
    static inline gd_u128 gd_pcg_inc(gd_u128 seq) { return (seq << 1) | 1; }
    static inline gd_u128 gd_pcg_add(gd_u128 a, gd_u128 b) { return a + b; }
    static inline gd_u128 gd_u128_zero(void) { return 0; }
    """
    gd_u128 gd_pcg_step(gd_u128 state, gd_u128 inc) nogil
    gd_u128 gd_pcg_inc(gd_u128 seq) nogil
    gd_u128 gd_pcg_add(gd_u128 a, gd_u128 b) nogil
    gd_u128 gd_u128_zero() nogil

# numpy's SeedSequence constants (numpy/random/bit_generator.pyx)
cdef uint32_t INIT_A = 0x43b0d7e5
cdef uint32_t MULT_A = 0x931e8875
cdef uint32_t INIT_B = 0x8b51f9dd
cdef uint32_t MULT_B = 0x58f38ded
cdef uint32_t MIX_MULT_L = 0xca01f9dd
cdef uint32_t MIX_MULT_R = 0x4973f715
cdef enum:
    XSHIFT = 16
    POOL = 4
    MAX_WORDS = 16


cdef inline uint32_t hashmix(uint32_t value, uint32_t *hash_const) noexcept nogil:
    value ^= hash_const[0]
    hash_const[0] *= MULT_A
    value *= hash_const[0]
    value ^= value >> XSHIFT
    return value


cdef inline uint32_t mix(uint32_t x, uint32_t y) noexcept nogil:
    cdef uint32_t result = MIX_MULT_L * x - MIX_MULT_R * y
    result ^= result >> XSHIFT
    return result


def pcg64_state(entropy):
    """``(state, inc)`` of ``numpy.random.PCG64(numpy.random.SeedSequence(entropy))``.

    Parameters
    ----------
    entropy : sequence of int
        At most 8 non-negative integers, each below 2**64.

    Returns
    -------
    tuple of int
        The generator's 128-bit ``state`` and ``inc``, as ``PCG64.state["state"]`` holds them.

    Raises
    ------
    OverflowError
        For a negative integer, one of 2**64 or more, or more than 8 of them.
    """
    cdef uint32_t words[MAX_WORDS]
    cdef uint32_t pool[POOL]
    cdef uint32_t state32[8]
    cdef uint64_t state64[4]
    cdef uint64_t v
    cdef uint32_t hash_const
    cdef int n = 0, i, i_src, i_dst
    cdef gd_u128 seed, seq, inc, st
    if len(entropy) > MAX_WORDS // 2:
        raise OverflowError("at most 8 integers")
    for x in entropy:
        v = index(x)  # an integer (TypeError for a float, as numpy's); OverflowError when negative or too large
        words[n] = <uint32_t>v  # numpy's words: each integer's 32-bit words, low first; 0 is one word
        n += 1
        v >>= 32
        if v:
            words[n] = <uint32_t>v
            n += 1
    with nogil:
        hash_const = INIT_A
        for i in range(POOL):
            pool[i] = hashmix(words[i] if i < n else 0, &hash_const)
        for i_src in range(POOL):
            for i_dst in range(POOL):
                if i_src != i_dst:
                    pool[i_dst] = mix(pool[i_dst], hashmix(pool[i_src], &hash_const))
        for i_src in range(POOL, n):
            for i_dst in range(POOL):
                pool[i_dst] = mix(pool[i_dst], hashmix(words[i_src], &hash_const))
        hash_const = INIT_B
        for i in range(8):  # generate_state(4, uint64): eight 32-bit words, read as four 64-bit ones
            state32[i] = pool[i % POOL] ^ hash_const
            hash_const *= MULT_B
            state32[i] *= hash_const
            state32[i] ^= state32[i] >> XSHIFT
        for i in range(4):
            state64[i] = (<uint64_t>state32[2 * i]) | ((<uint64_t>state32[2 * i + 1]) << 32)
        # PCG64's seeding: seed = words 0-1, sequence = words 2-3 (high word first)
        seed = gd_u128_of(state64[0], state64[1])
        seq = gd_u128_of(state64[2], state64[3])
        inc = gd_pcg_inc(seq)
        st = gd_pcg_step(gd_u128_zero(), inc)
        st = gd_pcg_step(gd_pcg_add(st, seed), inc)
    cdef object hi_state = gd_u128_hi(st), hi_inc = gd_u128_hi(inc)  # Python ints from here
    return (hi_state << 64) | gd_u128_lo(st), (hi_inc << 64) | gd_u128_lo(inc)
