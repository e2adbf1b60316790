//! Retention of a Redis stream: what `XTRIM … MINID` may remove.
//!
//! Redis 7.0 has no `XTRIM … ACKED` (that came in 8.2), so the bound is
//! computed from the groups' state: an entry may go only when it is older
//! than the retention **and** every group has acknowledged it — it is at or
//! before the group's last delivered id and not in its pending list. A group
//! created later starts from the oldest entry still there, so the retention
//! is what a new group can still read.

use super::reply::{EntryId, GroupInfo};

/// One group's bound: its oldest pending entry, or just after the last entry
/// it was given when nothing is pending.
fn group_bound(group: &GroupInfo, oldest_pending: Option<EntryId>) -> EntryId {
    match oldest_pending {
        Some(oldest) if group.pending > 0 => oldest,
        _ => group.last_delivered.next(),
    }
}

/// The `MINID` for `XTRIM`: every entry below it may be removed.
/// `groups` pairs each group with its oldest pending id.
pub(crate) fn min_id(
    groups: &[(GroupInfo, Option<EntryId>)],
    now_unix_ms: u64,
    retention_ms: u64,
) -> EntryId {
    let retained_from = EntryId {
        ms: now_unix_ms.saturating_sub(retention_ms),
        seq: 0,
    };
    groups
        .iter()
        .map(|(group, oldest)| group_bound(group, *oldest))
        .fold(retained_from, std::cmp::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, pending: u64, last: EntryId) -> GroupInfo {
        GroupInfo {
            name: name.into(),
            pending,
            last_delivered: last,
            lag: Some(0),
        }
    }

    const DAY: u64 = 86_400_000;

    #[test]
    fn nothing_younger_than_the_retention_is_trimmed() {
        let now = 10 * DAY;
        let caught_up = group("a", 0, EntryId { ms: now, seq: 0 });
        assert_eq!(
            min_id(&[(caught_up, None)], now, 7 * DAY),
            EntryId {
                ms: 3 * DAY,
                seq: 0
            }
        );
        assert_eq!(
            min_id(&[], now, 7 * DAY),
            EntryId {
                ms: 3 * DAY,
                seq: 0
            }
        );
    }

    #[test]
    fn nothing_a_group_has_not_acknowledged_is_trimmed() {
        let now = 10 * DAY;
        // "b" was given entries up to day 1 and still has one from day 0.5
        // pending; "c" never read anything (a new group starts at 0).
        let pending = group("b", 1, EntryId { ms: DAY, seq: 0 });
        let oldest = EntryId {
            ms: DAY / 2,
            seq: 3,
        };
        assert_eq!(min_id(&[(pending, Some(oldest))], now, DAY), oldest);
        let behind = group(
            "c",
            0,
            EntryId {
                ms: 2 * DAY,
                seq: 4,
            },
        );
        assert_eq!(
            min_id(&[(behind, None)], now, DAY),
            EntryId {
                ms: 2 * DAY,
                seq: 5
            }
        );
        let new = group("d", 0, EntryId::ZERO);
        assert_eq!(min_id(&[(new, None)], now, DAY), EntryId { ms: 0, seq: 1 });
    }
}
