//! Masking of sensitive values in PostgreSQL results, at wire speed.
//!
//! A [`MaskingPolicy`] (plain config data) compiles into a [`Masker`], an
//! immutable value shared by every session of a connection. The proxy asks
//! it, per result column, for the [`ColumnRuleId`] that masks the whole
//! column ([`Masker::column_rule`], [`Masker::mask_whole`]), and runs the
//! value rules over every other text value ([`Masker::mask_value`]), COPY
//! row ([`copy::mask_row`]) and server message text ([`Masker::mask_text`]).
//!
//! This crate is pure: no I/O, no async runtime, and no input makes it
//! panic. Values are bytes; invalid UTF-8 is tolerated, and the output is
//! valid UTF-8 whenever the input was.
//!
//! # Strategies
//!
//! | strategy | column rule | finding of a value rule | free text |
//! |---|---|---|---|
//! | `redact` | `[REDACTED]` | `[REDACTED]` | `[REDACTED]` |
//! | `partial` | last N alphanumerics kept, others `*` | same, on the span | same |
//! | `hash` | `tok_` + 20 hex of HMAC-SHA-256 | same, on the span | same |
//! | `null` | SQL NULL | the whole value becomes NULL | `[REDACTED]` |
//!
//! `partial` keeps separators (`123-45-6789` → `***-**-6789`) and stars
//! every alphanumeric when the value has no more than N of them.
//!
//! # Built-in detectors
//!
//! `card`, `ssn`, `email`, `phone`, `iban`, `ip`, `jwt`, `aws_key`,
//! `bearer`. Each is a hand-written validator behind shared byte-class
//! prefilters, so all of them together cost one classification of the
//! value and, only where a finding's shape occurs, one scan (see `scan`).
//! In short:
//!
//! - `card`: 13–19 digits, alone or in groups (first of four, then 3–6)
//!   joined by single spaces or dashes; known issuer prefix and length; Luhn.
//! - `ssn`: `AAA-GG-SSSS`, or nine bare digits between plain separators
//!   (whitespace, quotes, brackets, `=`, `,`), never area 000/666/9xx,
//!   group 00, serial 0000. A column holding nothing but 9-digit numbers
//!   therefore looks like SSNs: give it a column rule or no value rule.
//! - `email`: `local@domain.tld`, local part of `[A-Za-z0-9._%+-]`, a
//!   dotted domain ending in a 2+ letter TLD.
//! - `phone`: E.164 (`+` and 8–15 digits, separators allowed) and
//!   North-American numbers with separators; bare digit runs are never phones.
//! - `iban`: country length table, mod-97, upper case, optional groups of 4.
//! - `ip`: dotted quads (not within longer dotted runs) and IPv6 (parsed by
//!   `std`, at least two groups: `::1` and `::` are not reported).
//! - `jwt`: `eyJ…​.eyJ…​.sig`; `aws_key`: access key ids; `bearer`: the token
//!   after `Bearer `.
//!
//! Custom detectors are size-limited regular expressions or word lists
//! (whole words, ASCII case-insensitive); they cost one extra pass each.
//!
//! # False positives
//!
//! `tests/false_positives.rs` generates a deterministic corpus of 12,000
//! PII-free values in 24 shapes (order ids, timestamps, ISO dates, UUIDs,
//! versions, prices, phone-like product codes, SKUs, hex digests, invoice
//! numbers, zip codes, coordinates, git SHAs, semver, …) and asserts an
//! upper bound on the share of values each detector flags. Measured:
//!
//! | detector | flagged values (share) | bound |
//! |---|---|---|
//! | card | 0 (0.000 %) | 0.1 % |
//! | ssn | 7 (0.058 %) | 0.1 % |
//! | email | 0 (0.000 %) | 0.1 % |
//! | phone | 0 (0.000 %) | 0.5 % |
//! | iban | 0 (0.000 %) | 0.1 % |
//! | ip | 0 (0.000 %) | 0.5 % |
//! | jwt | 0 (0.000 %) | 0.1 % |
//! | aws_key | 0 (0.000 %) | 0.1 % |
//! | bearer | 0 (0.000 %) | 0.1 % |
//!
//! The seven SSN hits are bare 9-digit integers (floats that happen to be
//! whole, printed without a fraction), which the `ssn` rule accepts by
//! design. The corpus says nothing about values shaped exactly like PII
//! (a test card number in a fixture, a phone-formatted part number): those
//! are masked, which is the point.
//!
//! # Speed
//!
//! `cargo bench -p juris-mask --bench engine`, all nine built-ins enabled
//! (`partial`), 1 MiB corpora generated in the bench (`mask_shape/*`: each
//! shape of the PII-free corpus alone, 256 KiB). Measured on a shared
//! 2-core VM (AMD EPYC, ~2.4 GHz, no hardware counters) while other jobs
//! were running, so these are lower bounds and run-to-run noise is ±30 %.
//! Criterion's MiB/s, best of alternating runs of the two builds' bench
//! binaries (the old one copied aside before the change):
//!
//! ```text
//! cp target/release/deps/engine-<hash> /tmp/engine-old     # before
//! cargo bench -p juris-mask --bench engine --no-run         # after
//! for r in 1 2 3 4; do for b in old new; do /tmp/engine-$b --bench \
//!   'mask_value|mask_shape|mask_row' --noplot --warm-up-time 1 \
//!   --measurement-time 2; done; done
//! ```
//!
//! Latest round (2026-11-24, "a fifth fewer"), measured by callgrind,
//! one pass over each corpus (`valgrind --tool=callgrind
//! --toggle-collect='maskprof::run'` on a small harness, not committed,
//! that builds the bench's corpora and policy and calls `mask_value` over
//! them as the bench does; it counts the previous round's 33.74 M as
//! 33.71 M; a checksum of every output, identical before and after, shows
//! nothing masked changed):
//!
//! | corpus | instructions per pass before → after |
//! |---|---|
//! | `pii_dense` | 33.71 M → 26.48 M (−21.4 %) |
//! | `pii_free` | 8.97 M → 8.44 M (−5.9 %) |
//! | shapes name / address / prose / timestamp / uuid | 5.43 / 4.84 / 1.16 / 4.96 / 4.92 M → 5.40 / 4.11 / 1.16 / 4.28 / 4.26 M |
//! | shapes price / status | 11.61 / 7.04 M → 11.43 / 7.04 M |
//! | `mask_row/text_pii_free` rows (`mask_row` over them) | 22.04 M → 21.51 M |
//!
//! What changed, dense (PII-free) instructions per pass:
//!
//! - IBAN: the checksum is reduced group by group as the groups are read,
//!   four digits parsed as one word, instead of gathering the characters
//!   and reducing them one at a time (~900 → ~390 instructions an IBAN):
//!   −1.15 M.
//! - Gate: the `0` after `+`, the `A`s of `A??A` and the `y` of `eyJ`
//!   are read from the bytes of the few candidates the other classes
//!   leave, instead of three classes computed for every block (`ZERO`,
//!   `CAP_A`, and `RPAREN`, unused, are gone); the detectors' switches
//!   are all-ones masks with one test at the end: −0.85 M (−0.19 M).
//! - Rendering: when every span is `partial` and ASCII (always, for the
//!   built-ins) the value is copied once and its spans starred in place,
//!   instead of a `memcpy` per gap and per span and a `write_masked` call
//!   per span (−1.39 M); the cut is found from the span's last eight
//!   bytes classified at once, and the ASCII check ORs whole words and
//!   one overlapping last word (−0.96 M); each span's strategy is looked
//!   up once (−0.17 M).
//! - Gate: `check` is instantiated twice, and for the usual policy (all
//!   nine on) the switches fold away and the shapes are one chain of ors
//!   with fewer spills (−0.59 M, −0.16 M); the quick pass runs before the
//!   two instantiations, where it is inlined again (−0.12 M, −0.17 M).
//! - Validators: a colon not followed by an address byte and not after
//!   another colon is rejected before its token is measured (`Doe: `,
//!   −0.37 M); email bytes come from a 256-entry class table and a TLD's
//!   letters are checked while the label is read (−0.49 M); AWS key ids
//!   are a prefix word and two words of base32 (−0.25 M); `(ddd)`
//!   phones and IPv4 octets test their bytes where the shape puts them
//!   instead of measuring runs (−0.52 M, prices −0.18 M); `State::push`
//!   is inlined (−0.36 M).
//!
//! Each new fast path is held by a test to the code it replaced (kept in
//! the tests) or to a plain definition, on random inputs from every start
//! (IBAN, mod-97 groups, the cut and ASCII check, in-place rendering,
//! `on_colon`, `on_at`, AWS keys, `(ddd)` phones and IPv4); each of those
//! tests was seen to fail on a deliberately broken version, and the gate
//! tests fail on each broken byte test of `hits`.
//!
//! Criterion's MiB/s (middle estimates, best of alternating runs of the
//! old and new bench binaries), on a machine that measured the old build
//! much faster today than in the rounds below (the same `pii_dense` at
//! 390–442 MiB/s against 240 then), so only the ratios compare:
//!
//! | bench | old → new, 6 runs each, load 3.3–4.1 | old → new, 5 runs each, load 2.6–3.9 |
//! |---|---|---|
//! | `mask_value/pii_dense` | 390 → 556 | 442 → 554 |
//! | `mask_value/pii_free` | 1750 → 1653 | 1742 → 1836 |
//! | `mask_row/text_pii_free` | — | 995 → 891 |
//!
//! and, 4 runs each at a load average of about 3.3: `pii_free` 1796 →
//! 1814, shapes name 881 → 881, address 1048 → 1115, prose 5604 → 5708,
//! timestamp 1130 → 1201, uuid 1206 → 1341, price 559 → 576, status
//! 575 → 591. `mask_row` measured lower although its instructions fell
//! 2.4 % and simulated branch misses (`--branch-sim`) rose 2 %: bench
//! binaries of the commits of this round, none of which touches its
//! code, measured it anywhere from 858 (the IBAN commit alone) to 1020
//! MiB/s (three runs each, alternating), so code placement, not work,
//! moves it; it was not chased further.
//!
//! The round before (2026-11-24, "later-block start"): the best of eight
//! alternating runs of `mask_value/pii_(free|dense)$` at a load average
//! of 1.5–3.7 gave 984 / 245 MiB/s (old) and 977 / 243 MiB/s (new,
//! before the JWT change below); with it, four more at a load average of
//! 3.1–3.6 gave 887 / 194 (old) and 859 / 223 (new): timing cannot
//! resolve this round on the shared machine. Callgrind can, one pass over each
//! corpus (`valgrind --tool=callgrind --toggle-collect='maskprof::run'`
//! on a small harness that builds the bench's corpora and policy and
//! calls `mask_value` over them as the bench does):
//!
//! | corpus | instructions per pass before → after |
//! |---|---|
//! | `pii_dense` | 35.53 M → 33.74 M (−5.0 %) |
//! | `pii_free` | 9.06 M → 9.01 M |
//! | shapes name / address / prose / timestamp / uuid | 5.43 / 4.86 / 1.18 / 4.96 / 4.95 M → 5.47 / 4.86 / 1.16 / 4.97 / 4.94 M |
//! | shapes price / status | 11.61 / 7.15 M → 11.69 / 7.11 M |
//!
//! What changed: for values longer than 64 bytes, the exact gate pass
//! and the scan loop start at the first block in which the quick pass
//! saw the first byte of a shape (every shape of the exact pass starts
//! with a byte the quick pass looks for, so no finding starts before
//! it, and the skipped prefix holds no colon) (−1.1 M dense); the gate's
//! `(ddd)` shape lost its `)` class (−0.25 M dense, −0.08 M PII-free); a
//! JWT's three segments are measured from one classification of the 64
//! bytes at its start (−0.5 M dense). Tests hold scans from a later block
//! to the unfiltered loop on long letter-only prefixes followed by
//! findings, and the JWT block's runs to `run_of` from every start.
//!
//! The round before (2026-11-24, "classify once"), each the best of four
//! alternating runs: `mask_value` alone at a load average of 3.5 on the
//! 2 cores, then every bench at a load average of 5 (the old build
//! measured 722 / 167 and 692 / 170 MiB/s there, against 740 / 188 in a
//! quieter earlier round); and, exact and repeatable, callgrind's
//! instruction count per pass over the same corpora (a harness calling
//! `mask_value` as the bench does):
//!
//! | bench | MiB/s before → after | instructions per pass before → after |
//! |---|---|---|
//! | `mask_value/pii_free` (names, addresses, prose, timestamps, UUIDs, prices) | 722 → 977 (load 3.5); 692 → 900 (load 5) | 15.9 M → 9.1 M |
//! | `mask_value/pii_dense` (every value has 1–2 findings) | 167 → 238 (load 3.5); 170 → 224 (load 5) | 50.4 M → 35.5 M |
//! | `mask_value/pii_free_with_custom` (+ a regex and a word list) | 200 → 228 | — |
//! | `mask_row/text_pii_free` (4-column COPY text rows) | 399 → 540 | — |
//! | shape `prose` | 1066 → 2748 | 3.19 M → 1.18 M |
//! | shape `name` / `address` / `timestamp` / `uuid` | 347 / 512 / 553 / 472 → 493 / 520 / 569 / 590 | 7.17 / 5.75 / 5.75 / 6.46 M → 5.42 / 4.86 / 4.96 / 4.95 M |
//! | shape `price` / `status` | 252 / 421 → 286 / 342 | 11.95 / 5.89 M → 11.61 / 7.15 M |
//!
//! (Earlier rounds: the whole-value gate took `pii_free` from 489 to 740
//! MiB/s and `pii_dense` from 182 to 188; the SWAR skip loop before it
//! took `pii_free` from ~430 to ~470–500 MB/s.)
//!
//! The targets are 1 GB/s PII-free and 300 MB/s dense. PII-free reached
//! 977 MiB/s (1.02 GB/s) under load in the "classify once" round, a lower
//! bound, and needs 5.9 % fewer instructions since: met. Dense reached
//! 238–245 MiB/s in the earlier rounds and needs 21.4 % fewer
//! instructions since, which at the same instructions per cycle is
//! ~310 MiB/s (~325 MB/s); measured today, 554–556 MiB/s against 390–442
//! for the old build: met by instruction count, and on today's timing,
//! but not yet confirmed by a timing under the earlier rounds' load.
//! What is in place:
//!
//! - One classification: a value is classified 64 bytes at a time into
//!   one bit mask per byte class (`scan::gate::block_masks`: SSE2 compares
//!   and one `movemask` per 16 bytes on x86-64, SWAR words elsewhere; only
//!   the classes a pass needs are computed). Values longer than 16 bytes
//!   first pass the gate (`scan::gate`), which tests each detector's
//!   shortest necessary shape with shifts and ands; most timestamps,
//!   UUIDs, addresses and prose hold none and skip the scan loop. Values
//!   longer than 64 bytes first get a quick pass with five classes (any
//!   digit or `@+(:`, two capitals, `ey` + capital, `be..e`), which prose
//!   rarely survives. Tests hold the masks to a plain byte-at-a-time
//!   definition and check the gate never hides a finding of the
//!   unfiltered loop.
//! - The scan loop starts from the gate's masks of the first block and
//!   classifies later blocks where the scan resumes; from each block's
//!   masks it takes the triggers worth a look (`scan::worth_mask`: not
//!   inside a word, capitals followed by a capital, `b` followed by `e`)
//!   and dispatches them in turn (a test checks the result against the
//!   unfiltered loop on long random values). JWT segments and bearer
//!   tokens are measured with the same classifier.
//! - The dense path reuses a per-thread span buffer (no allocation per
//!   value with findings), copies a value once and stars its `partial`
//!   spans in place, in whole 16- or 8-byte pieces, from a cut found in
//!   the span's last word, and reduces the IBAN checksum a group of four
//!   digits at a time.
//! - The cut of `partial` goes on eight bytes at a time past the last
//!   word: a column value that is mostly blanks (a padded `char(n)`,
//!   pgbench's `filler`) costs a word per step, not a byte (about 30 ns a
//!   row less on the 10,000-row gateway benchmark).
//!
//! What remains, from callgrind on the dense corpus after the "a fifth
//! fewer" round: the gate 30 % (7.9 M: for values of 17–64 bytes ~230
//! instructions a value over what the scan loop alone would pay, most of
//! it `hits` and the 13-class classification; for longer ones the quick
//! pass classifies the first block again for the exact pass), rendering
//! 20 % (`star_ascii` ~140 instructions a span: the cut and the starring
//! pieces), `on_upper` 12 % (IBAN groups ~390 an IBAN, JWT segments ~300
//! a token, bearer tokens ~230), `on_digit` 10 % (Luhn, SSN and IPv4
//! shapes), `on_at` 3 %. Tried and dropped in this round, as they
//! measured more instructions: `partial` written a word at a time from
//! classified words (+2.6 M: two passes of ~35 instructions a word did
//! not beat the vectorised starring and the short backwards count), the
//! quick pass computing the exact pass's classes from the same loads
//! when a block holds a digit (+1.1 M dense, +1.2 M PII-free: the staged
//! classification was no longer inlined), and `gate::check` inlined into
//! the scan (+0.6 M). Next steps: the `Findings` count per span (a linear
//! search, ~25 instructions a finding), a `hits` that stops at the first
//! shape found, and bearer tokens and JWT segments measured with fewer
//! classifications.
//!
//! After the later-block round: the gate 28 % (its classification and `hits`, ~145
//! instructions a block), rendering 23 % (`write_masked` 17 %: about 260
//! instructions a span, spread over the ASCII check, the cut, the copy
//! and the starring), `on_upper` 15 % (JWT segments and bearer tokens
//! classified by `run_of`, IBAN mod-97), `on_digit` 9 % (before the JWT
//! change, which took `on_upper` down by a tenth). Tried and dropped,
//! as they measured more instructions: the cut of `partial` from a bit
//! mask of the span's alphanumerics (+0.3 M), `run_of` 16 bytes at a
//! time (+0.1 M), and Luhn by digit pairs and a table (+0.03 M). Dense
//! needs about a fifth fewer instructions for 300 MB/s.
//!
//! Before that round, from `perf` (cpu-clock sampling) on the dense corpus:
//! the gate was about a quarter of the time (its 17-class block
//! classification, and for long values the quick pass and the overlapping
//! blocks before the finding), `write_masked` about 16 % (the starring
//! reads bytes a `memcpy` has just written, and the copy itself), the
//! dispatch's indirect jump and the per-finding count (`Findings::record`)
//! a few % each. Statuses (8–16 lower-case bytes) lost ~20 %: they now
//! pay one classification where the SWAR loop skipped them; a byte loop
//! for them costs names more than it saves. Next steps then: start the
//! exact pass at the quick pass's first block with a shape (done in the
//! later-block round), and write the starred span from the source
//! instead of re-reading the copy (a first attempt did not vectorise and
//! was slower). Next steps after the later-block round: a cheaper `hits` for
//! short values (only the shapes of enabled detectors); a `partial`
//! writer without the separate ASCII check and copy.

mod findings;
mod glob;
mod policy_compile;
mod scan;
mod strategy;

pub mod copy;
pub mod policy;

use std::borrow::Cow;
use std::cell::Cell;

pub use copy::{CopyError, CopyFormat, mask_row};
pub use findings::{Finding, Findings};
pub use policy::{ColumnRule, CustomDetector, MaskingPolicy, StrategyName, ValueRule};
pub use strategy::Strategy;

use scan::{BUILTIN_NAMES, Builtins, RawSpan, custom::Matcher};
use strategy::{HashKey, REDACTED, write_masked};

/// Identifies one column rule of a compiled policy (its index in config order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ColumnRuleId(pub u16);

/// Identifies a detector: built-ins first (in [`Masker::builtin_detectors`]
/// order), then custom detectors in config order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DetectorId(pub u16);

/// Where a result column comes from (`RowDescription`'s table OID and
/// attribute number, resolved by the proxy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceColumn<'a> {
    pub schema: &'a str,
    pub table: &'a str,
    pub column: &'a str,
}

/// A finding: byte range within the scanned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub detector: DetectorId,
}

/// What masking did to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to mask; `out` was not touched.
    Unchanged,
    /// `out` (cleared first) holds the new value.
    Rewritten,
    /// The value must be sent as SQL NULL.
    Null,
}

/// One problem in a policy; `key` is relative to the policy, e.g.
/// `column[1].pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// Errors of this crate (COPY parsing has its own [`CopyError`]).
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// The policy does not compile; every problem found is listed.
    #[error("invalid masking policy: {}", join_problems(.0))]
    InvalidPolicy(Vec<Problem>),
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a column rule selects columns.
#[derive(Debug, Clone)]
enum ColumnMatch {
    /// `schema.table.column`, identifiers already folded.
    Name([String; 3]),
    Pattern(glob::Glob),
}

#[derive(Debug, Clone)]
struct CompiledColumn {
    label: String,
    matcher: ColumnMatch,
    strategy: Strategy,
}

/// A custom detector a value rule uses.
#[derive(Debug, Clone)]
struct ActiveCustom {
    id: u16,
    matcher: Matcher,
}

/// An immutable compiled policy; `Send + Sync`, shared behind `Arc` by all
/// sessions of a connection.
#[derive(Clone)]
pub struct Masker {
    exempt_groups: Vec<String>,
    columns: Vec<CompiledColumn>,
    /// Detector names by [`DetectorId`].
    detector_names: Vec<String>,
    /// The value rule's strategy by [`DetectorId`]; `None` = not used.
    value_strategies: Vec<Option<Strategy>>,
    value_rules: usize,
    builtins: Builtins,
    customs: Vec<ActiveCustom>,
    hash_key: Option<HashKey>,
}

impl std::fmt::Debug for Masker {
    // Hand-written so the hash key can never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("exempt_groups", &self.exempt_groups)
            .field(
                "columns",
                &self.columns.iter().map(|c| &c.label).collect::<Vec<_>>(),
            )
            .field("value_rules", &self.value_rules)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Compile a policy, reporting every problem at once. `hash_key` is the
    /// deployment's secret for the `hash` strategy.
    pub fn compile(policy: &MaskingPolicy, hash_key: Option<&[u8]>) -> Result<Masker, MaskError> {
        policy_compile::compile(policy, hash_key)
    }

    /// No column rules and no value rules: the proxy can skip masking.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty() && self.value_rules == 0
    }

    /// Some value rule exists (every text value must be scanned).
    pub fn has_value_rules(&self) -> bool {
        self.value_rules > 0
    }

    /// Whether any column rule exists (COPY then needs to know its columns).
    pub fn has_column_rules(&self) -> bool {
        !self.columns.is_empty()
    }

    /// IdP groups that see cleartext.
    pub fn exempt_groups(&self) -> &[String] {
        &self.exempt_groups
    }

    /// The first column rule (config order) matching a result column: a
    /// `name` rule matches the source column exactly; a `pattern` rule
    /// matches the source column's name or the output name.
    pub fn column_rule(
        &self,
        source: Option<SourceColumn<'_>>,
        output_name: &str,
    ) -> Option<ColumnRuleId> {
        let index = self.columns.iter().position(|rule| match &rule.matcher {
            ColumnMatch::Name([schema, table, column]) => {
                source.is_some_and(|s| s.schema == schema && s.table == table && s.column == column)
            }
            ColumnMatch::Pattern(glob) => {
                source.is_some_and(|s| glob.matches(s.column)) || glob.matches(output_name)
            }
        })?;
        // compile refuses more rules than fit in a u16.
        u16::try_from(index).ok().map(ColumnRuleId)
    }

    /// The strategy of a column rule (`redact` for an id of another policy:
    /// failing closed).
    pub fn column_strategy(&self, id: ColumnRuleId) -> Strategy {
        self.columns
            .get(usize::from(id.0))
            .map_or(Strategy::Redact, |c| c.strategy)
    }

    /// The rule's `name` or `pattern`, for reports.
    pub fn column_label(&self, id: ColumnRuleId) -> &str {
        self.columns
            .get(usize::from(id.0))
            .map_or("", |c| c.label.as_str())
    }

    /// Mask a whole value by a column rule: `Null` for the null strategy,
    /// otherwise `Rewritten` with the replacement in `out`.
    pub fn mask_whole(&self, id: ColumnRuleId, value: &[u8], out: &mut Vec<u8>) -> Outcome {
        let strategy = self.column_strategy(id);
        if strategy == Strategy::Null {
            return Outcome::Null;
        }
        out.clear();
        write_masked(strategy, value, self.hash_key.as_ref(), out);
        Outcome::Rewritten
    }

    /// Mask what the value rules find in one value. Nothing found:
    /// `Unchanged`, `out` untouched, nothing allocated. A finding whose rule
    /// says `null` makes the whole value `Null`. Findings are recorded.
    pub fn mask_value(&self, value: &[u8], out: &mut Vec<u8>, findings: &mut Findings) -> Outcome {
        self.with_findings(value, |spans| {
            if spans.is_empty() {
                return Outcome::Unchanged;
            }
            let mut null = false;
            for s in spans {
                let strategy = self.value_strategy(s.detector);
                findings.record(DetectorId(s.detector), strategy);
                null |= strategy == Strategy::Null;
            }
            if null {
                return Outcome::Null;
            }
            out.clear();
            self.render(value, spans, out);
            Outcome::Rewritten
        })
    }

    /// Mask free text (error messages, DETAIL, notices, NOTIFY payloads)
    /// with the value rules; `null` acts as `redact`. Borrowed when nothing
    /// was found.
    pub fn mask_text<'a>(&self, text: &'a str, findings: &mut Findings) -> Cow<'a, str> {
        self.with_findings(text.as_bytes(), |spans| {
            if spans.is_empty() {
                return Cow::Borrowed(text);
            }
            for s in spans {
                let strategy = match self.value_strategy(s.detector) {
                    Strategy::Null => Strategy::Redact,
                    other => other,
                };
                findings.record(DetectorId(s.detector), strategy);
            }
            let mut out = Vec::with_capacity(text.len() + 16);
            self.render(text.as_bytes(), spans, &mut out);
            // Spans lie on character boundaries and replacements are UTF-8, so
            // this is always Ok; the lossy path only guards against a bug.
            Cow::Owned(
                String::from_utf8(out)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )
        })
    }

    /// What the value rules' detectors find (for `juris mask test`): sorted,
    /// non-overlapping.
    pub fn scan(&self, value: &[u8]) -> Vec<Span> {
        self.with_findings(value, |spans| {
            spans
                .iter()
                .map(|s| Span {
                    start: s.start,
                    end: s.end,
                    detector: DetectorId(s.detector),
                })
                .collect()
        })
    }

    /// A detector's name (`"unknown"` for an id of another policy).
    pub fn detector_name(&self, id: DetectorId) -> &str {
        self.detector_names
            .get(usize::from(id.0))
            .map_or("unknown", String::as_str)
    }

    /// Names of the built-in detectors.
    pub fn builtin_detectors() -> &'static [&'static str] {
        &BUILTIN_NAMES
    }

    fn value_strategy(&self, detector: u16) -> Strategy {
        self.value_strategies
            .get(usize::from(detector))
            .copied()
            .flatten()
            .unwrap_or(Strategy::Redact)
    }

    /// Run `f` on all findings, sorted and disjoint. The span buffer is the
    /// thread's, reused from value to value: a fresh `Vec` per value with
    /// findings cost an allocation and a free, ~5 % of the dense path.
    fn with_findings<R>(&self, value: &[u8], f: impl FnOnce(&[RawSpan]) -> R) -> R {
        thread_local! {
            static SPANS: Cell<Vec<RawSpan>> = const { Cell::new(Vec::new()) };
        }
        // Taken, not borrowed: a nested call (none today) would get an
        // empty buffer of its own instead of a `RefCell` panic.
        let mut spans = SPANS.take();
        spans.clear();
        self.find(value, &mut spans);
        let result = f(&spans);
        spans.clear();
        SPANS.set(spans);
        result
    }

    /// Append all findings to `spans` (empty), sorted and disjoint.
    fn find(&self, value: &[u8], spans: &mut Vec<RawSpan>) {
        self.builtins.scan(value, spans);
        if self.customs.is_empty() {
            return;
        }
        for c in &self.customs {
            c.matcher.find(value, c.id, spans);
        }
        if !spans.is_empty() {
            scan::normalize(value, spans, |d| self.value_strategy(d).strength());
        }
    }

    fn render(&self, value: &[u8], spans: &[RawSpan], out: &mut Vec<u8>) {
        if !self.render_in_place(value, spans, out) {
            self.render_pieces(value, spans, out);
        }
    }

    /// `render` when every span is `partial`: an ASCII span keeps its
    /// length, so the value is copied once and its spans starred in place,
    /// instead of copying each gap and each span on its own (a `memcpy`
    /// call each, and a call of `write_masked` per span: ~85 instructions
    /// a value of the dense bench). `false`, with `out` as it was, if a
    /// span is of another strategy or not ASCII.
    fn render_in_place(&self, value: &[u8], spans: &[RawSpan], out: &mut Vec<u8>) -> bool {
        let partial = |s: &RawSpan| match self.value_strategy(s.detector) {
            Strategy::Partial { keep_last } => Some(keep_last),
            _ => None,
        };
        // The first span's strategy says whether to try: a policy mixing
        // strategies costs a copy given back when a span is not `partial`.
        if spans.first().is_some_and(|s| partial(s).is_none()) {
            return false;
        }
        let base = out.len();
        out.extend_from_slice(value);
        for s in spans {
            let starred = partial(s).is_some_and(|keep| {
                strategy::star_partial_ascii(&mut out[base + s.start..base + s.end], keep)
            });
            if !starred {
                out.truncate(base);
                return false;
            }
        }
        true
    }

    /// `render` span by span, each through `write_masked`.
    fn render_pieces(&self, value: &[u8], spans: &[RawSpan], out: &mut Vec<u8>) {
        let mut pos = 0;
        for s in spans {
            out.extend_from_slice(&value[pos..s.start]);
            let strategy = self.value_strategy(s.detector);
            if strategy == Strategy::Null {
                out.extend_from_slice(REDACTED.as_bytes());
            } else {
                write_masked(
                    strategy,
                    &value[s.start..s.end],
                    self.hash_key.as_ref(),
                    out,
                );
            }
            pos = s.end;
        }
        out.extend_from_slice(&value[pos..]);
    }
}

#[cfg(test)]
mod tests;
