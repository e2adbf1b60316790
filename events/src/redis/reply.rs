//! Reading Redis stream replies (RESP2 shapes of Redis 7.0) and stream ids.

use redis::Value;

/// A stream entry id, `<ms>-<seq>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct EntryId {
    pub(crate) ms: u64,
    pub(crate) seq: u64,
}

impl EntryId {
    #[cfg(test)]
    pub(crate) const ZERO: Self = Self { ms: 0, seq: 0 };

    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one.
    pub(crate) fn next(self) -> Self {
        match self.seq.checked_add(1) {
            Some(seq) => Self { ms: self.ms, seq },
            None => Self {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One stream entry: its id and its fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    pub(crate) fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_slice())
    }
}

pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

pub(crate) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(number) => Some(*number),
        other => text(other)?.parse().ok(),
    }
}

pub(crate) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// `[id, [field, value, …]]` (a deleted entry, `[id, nil]`, has no fields).
pub(crate) fn entry(value: &Value) -> Option<Entry> {
    let parts = array(value);
    let id = text(parts.first()?)?;
    let mut fields = Vec::new();
    let raw = parts.get(1).map(array).unwrap_or_default();
    for pair in raw.chunks(2) {
        if let [name, value] = pair {
            let name = text(name)?;
            let value = match value {
                Value::BulkString(bytes) => bytes.clone(),
                other => text(other)?.into_bytes(),
            };
            fields.push((name, value));
        }
    }
    Some(Entry { id, fields })
}

/// XREADGROUP's `[[stream, [entry…]]…]` (nil on timeout): the entries.
pub(crate) fn read_reply(value: &Value) -> Vec<Entry> {
    array(value)
        .iter()
        .flat_map(|stream| array(stream).get(1).map(array).unwrap_or_default())
        .filter_map(entry)
        .collect()
}

/// XAUTOCLAIM's `[cursor, [entry…], [deleted id…]]`: the entries that still exist.
pub(crate) fn autoclaim_reply(value: &Value) -> Vec<Entry> {
    array(value)
        .get(1)
        .map(array)
        .unwrap_or_default()
        .iter()
        .filter_map(entry)
        .filter(|entry| !entry.fields.is_empty())
        .collect()
}

/// A flat `[key, value, key, value…]` (RESP2) or a map (RESP3): the value of `key`.
pub(crate) fn field<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    if let Value::Map(pairs) = value {
        return pairs
            .iter()
            .find(|(name, _)| text(name).as_deref() == Some(key))
            .map(|(_, value)| value);
    }
    array(value)
        .chunks(2)
        .find(|pair| text(&pair[0]).as_deref() == Some(key))
        .and_then(|pair| pair.get(1))
}

/// One group of XINFO GROUPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupInfo {
    pub(crate) name: String,
    pub(crate) pending: u64,
    pub(crate) last_delivered: EntryId,
    /// `None` when Redis cannot tell (7.0 answers nil after some deletions).
    pub(crate) lag: Option<u64>,
}

pub(crate) fn groups_reply(value: &Value) -> Vec<GroupInfo> {
    array(value)
        .iter()
        .filter_map(|group| {
            Some(GroupInfo {
                name: text(field(group, "name")?)?,
                pending: u64::try_from(int(field(group, "pending")?)?).ok()?,
                last_delivered: EntryId::parse(&text(field(group, "last-delivered-id")?)?)?,
                lag: field(group, "lag")
                    .and_then(int)
                    .and_then(|lag| u64::try_from(lag).ok()),
            })
        })
        .collect()
}

/// XPENDING's summary `[count, smallest, greatest, consumers]`: the smallest
/// pending id.
pub(crate) fn oldest_pending(value: &Value) -> Option<EntryId> {
    EntryId::parse(&text(array(value).get(1)?)?)
}

/// One row of extended XPENDING: `[id, consumer, idle ms, deliveries]`.
pub(crate) fn pending_deliveries(value: &Value) -> Vec<(String, u32)> {
    array(value)
        .iter()
        .filter_map(|row| {
            let row = array(row);
            Some((
                text(row.first()?)?,
                u32::try_from(int(row.get(3)?)?).unwrap_or(u32::MAX),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn ids_order_and_step() {
        let id = EntryId::parse("1700000000000-5").unwrap();
        assert_eq!(id.next().to_string(), "1700000000000-6");
        assert_eq!(
            EntryId {
                ms: 3,
                seq: u64::MAX
            }
            .next(),
            EntryId { ms: 4, seq: 0 }
        );
        assert!(EntryId::parse("1-2").unwrap() < EntryId::parse("2-0").unwrap());
        assert_eq!(EntryId::parse("x-1"), None);
    }

    #[test]
    fn read_and_groups_replies_parse() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("mesh.events.orders"),
            Value::Array(vec![Value::Array(vec![
                bulk("5-1"),
                Value::Array(vec![
                    bulk("ce_id"),
                    bulk("e1"),
                    bulk("data"),
                    Value::BulkString(vec![0, 255]),
                ]),
            ])]),
        ])]);
        let entries = read_reply(&reply);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "5-1");
        assert_eq!(entries[0].field("data"), Some(&[0u8, 255][..]));
        assert!(read_reply(&Value::Nil).is_empty());

        let groups = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("shipping"),
            bulk("consumers"),
            Value::Int(2),
            bulk("pending"),
            Value::Int(3),
            bulk("last-delivered-id"),
            bulk("9-0"),
            bulk("entries-read"),
            Value::Int(12),
            bulk("lag"),
            Value::Nil,
        ])]);
        assert_eq!(
            groups_reply(&groups),
            vec![GroupInfo {
                name: "shipping".into(),
                pending: 3,
                last_delivered: EntryId { ms: 9, seq: 0 },
                lag: None,
            }]
        );
    }
}
