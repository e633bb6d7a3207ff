//! `ota-server copy-store`: moves a fleet's whole state from one store to another (SQLite to
//! PostgreSQL, typically), into an empty target, and checks the copy.

use super::{Dump, Store, StoreError};

/// Copies every row of `from` into `to`, which must be empty; returns the rows per table.
/// The copy is read back and compared with the source, table by table.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
) -> Result<Vec<(&'static str, usize)>, StoreError> {
    let dump = from.dump().await?;
    to.restore(&dump).await?;
    let copied = to.dump().await?;
    check(&dump, &copied)?;
    Ok(dump.counts())
}

/// The same rows on both sides (the order of rows without one aside).
fn check(source: &Dump, copy: &Dump) -> Result<(), StoreError> {
    if source.counts() != copy.counts() {
        return Err(StoreError::new(format!(
            "the copy does not hold what the source does: {:?} copied as {:?}",
            source.counts(),
            copy.counts()
        )));
    }
    let (s, c) = (&source.snapshot, &copy.snapshot);
    let mut differs = Vec::new();
    let mut check = |table: &'static str, same: bool| {
        if !same {
            differs.push(table);
        }
    };
    check("images", same_rows(&s.images, &c.images, |i| i.id.to_string()));
    check("environments", s.environments == c.environments);
    check("releases", s.releases == c.releases);
    check("devices", same_rows(&s.devices, &c.devices, |d| d.id.to_string()));
    check("tokens", same_rows(&s.tokens, &c.tokens, |t| t.id.to_string()));
    check("build_keys", same_rows(&s.build_keys, &c.build_keys, |k| k.public_key.to_string()));
    check("events", source.events == copy.events);
    check("audit", source.audit == copy.audit);
    if differs.is_empty() {
        Ok(())
    } else {
        Err(StoreError::new(format!("the copy differs from the source in: {}", differs.join(", "))))
    }
}

/// The same rows, whatever their order (tables read without an order).
fn same_rows<T: PartialEq, K: Ord>(a: &[T], b: &[T], key: impl Fn(&T) -> K) -> bool {
    fn sorted<'a, T, K: Ord>(rows: &'a [T], key: &impl Fn(&T) -> K) -> Vec<&'a T> {
        let mut refs: Vec<&T> = rows.iter().collect();
        refs.sort_by_key(|r| key(r));
        refs
    }
    a.len() == b.len() && sorted(a, &key) == sorted(b, &key)
}
