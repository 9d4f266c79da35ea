// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Cid
/// @notice A cheap syntactic check that a string is a content identifier in one of its two
/// canonical text forms: a CIDv0 ("Qm" and 44 more base58btc characters, 46 in all) or a
/// CIDv1 in base32 (multibase prefix "b", lower-case RFC 4648 alphabet without padding, first
/// decoded byte the version 1 - so "ba" then one of "e".."h" - and a length a base32 encoding
/// can have), at most MAX_BYTES long. Nothing is decoded and no hash is checked: the point is
/// to refuse what no content store could ever serve, not to prove that one does.
/// @dev The alphabet is checked 32 characters at a time with SWAR range tests: for bytes below
/// 0x80, b + (0x80 - lo) has its high bit set iff b >= lo and b + (0x7f - hi) iff b > hi, and
/// neither sum carries into the next byte. The ranges of an alphabet are packed 16 bits each
/// (lo << 8 | hi). A 46-character CIDv0 costs about a thousand gas, a 59-character CIDv1 less.
/// Other multibase encodings of a CIDv1 ("z…", "f…", upper case) are refused: base32 is the
/// canonical one, and every CID converts to it.
library Cid {
    /// @notice Longest CID accepted, in bytes (a sha2-512 CIDv1 in base32 is 113).
    uint256 internal constant MAX_BYTES = 128;

    /// @dev base58btc: 1-9 A-H J-N P-Z a-k m-z.
    uint256 private constant BASE58 = 0x3139_4148_4a4e_505a_616b_6d7a;
    /// @dev base32 (RFC 4648, lower case): a-z 2-7.
    uint256 private constant BASE32 = 0x617a_3237;

    /// @notice Whether `cid` is a well-formed CIDv0 or base32 CIDv1 (see the contract notice).
    /// @param cid The string.
    /// @return ok True if well formed.
    function isWellFormed(string calldata cid) internal pure returns (bool ok) {
        assembly ("memory-safe") {
            let n := cid.length
            let head := shr(232, calldataload(cid.offset)) // the first three characters
            let ranges := 0
            switch and(eq(n, 46), eq(shr(8, head), 0x516d)) // "Qm"
            case 1 { ranges := BASE58 }
            default {
                let third := and(head, 0xff)
                let tail := and(sub(n, 1), 7) // base32 characters mod 8: never 1, 3 or 6
                if and(
                    and(eq(shr(8, head), 0x6261), and(gt(third, 0x64), lt(third, 0x69))), // "ba" + e..h
                    and(and(gt(n, 8), iszero(gt(n, MAX_BYTES))), iszero(or(or(eq(tail, 1), eq(tail, 3)), eq(tail, 6))))
                ) { ranges := BASE32 }
            }
            ok := iszero(iszero(ranges))
            let ones := div(not(0), 0xff) // 0x0101…01 (computed: shorter code than three 32-byte constants)
            let high := shl(7, ones)
            for { let i := 0 } and(ok, lt(i, n)) { i := add(i, 32) } {
                let w := calldataload(add(cid.offset, i))
                let left := sub(n, i)
                if lt(left, 32) {
                    let keep := not(sub(shl(mul(sub(32, left), 8), 1), 1))
                    w := or(and(w, keep), and(mul(0x61, ones), not(keep))) // pad with 'a' (in both alphabets)
                }
                let hit := 0
                for { let r := ranges } r { r := shr(16, r) } {
                    let lo := and(shr(8, r), 0xff)
                    let hi := and(r, 0xff)
                    hit := or(hit, and(add(w, mul(sub(0x80, lo), ones)), not(add(w, mul(sub(0x7f, hi), ones)))))
                }
                ok := and(iszero(and(w, high)), eq(and(hit, high), high))
            }
        }
    }
}
