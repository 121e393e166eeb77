//! Durability for the store (`--data-dir`): an append-only log of every
//! write plus periodic snapshots.
//!
//! Layout of the data directory:
//! - `log-<first rv>.wal`: segments of framed records, one per write, each
//!   fsync'd before the write is acknowledged;
//! - `snapshot-<rv>.snap`: every object at that version, framed the same
//!   way and closed by an end record, so a half-written snapshot is
//!   never mistaken for a whole one.
//!
//! A frame is `len: u32 LE`, `crc32(payload): u32 LE`, then a JSON payload.
//! Recovery loads the newest whole snapshot and replays the records after
//! it. A torn or corrupt tail of the last segment (a crash mid-write) is
//! cut off with a warning; corruption anywhere else is an error, because
//! acknowledged writes would be lost.

use crate::store::{Event, EventType, ObjectKey, ResourceKey};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How many records a segment holds before the next snapshot.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 20_000;

/// The largest frame accepted when reading (a corrupt length is not an
/// allocation request).
const MAX_FRAME: u32 = 64 * 1024 * 1024;

/// The open log.
pub struct Wal {
    dir: PathBuf,
    file: File,
    /// Records written to the current segment.
    records: u64,
    snapshot_every: u64,
}

/// What recovery found.
#[derive(Default)]
pub struct Recovered {
    pub version: u64,
    pub objects: Objects,
    /// The replayed writes after the snapshot, oldest first: the watch
    /// history a resuming watcher needs.
    pub events: Vec<Event>,
    /// Problems that were repaired, for the log.
    pub warnings: Vec<String>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("log-{first:020}.wal"))
}

fn snapshot_path(dir: &Path, version: u64) -> PathBuf {
    dir.join(format!("snapshot-{version:020}.snap"))
}

/// Files named `<prefix><number><suffix>`, by number.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            .and_then(|n| n.parse().ok())
        {
            out.push((n, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), as zlib computes it.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| {
        CRC_TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(payload.len() + 8);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32(payload).to_le_bytes());
    buf.extend_from_slice(payload);
    buf
}

/// Reads frames until the end; returns the payloads and, if the data
/// ends in a bad frame, the offset where the good data stops.
fn read_frames(bytes: &[u8]) -> (Vec<&[u8]>, Option<usize>) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let bad = Some(at);
        let Some(header) = bytes.get(at..at + 8) else {
            return (out, bad);
        };
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return (out, bad);
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len as usize) else {
            return (out, bad);
        };
        if crc32(payload) != crc {
            return (out, bad);
        }
        out.push(payload);
        at += 8 + len as usize;
    }
    (out, None)
}

fn key_json(key: &ObjectKey) -> Value {
    json!([
        key.resource.group,
        key.resource.resource,
        key.namespace,
        key.name
    ])
}

fn key_from(v: &Value) -> Option<ObjectKey> {
    let a = v.as_array()?;
    Some(ObjectKey {
        resource: ResourceKey::new(a.first()?.as_str()?, a.get(1)?.as_str()?),
        namespace: a.get(2)?.as_str().map(str::to_owned),
        name: a.get(3)?.as_str()?.to_owned(),
    })
}

fn kind_from(s: &str) -> Option<EventType> {
    Some(match s {
        "ADDED" => EventType::Added,
        "MODIFIED" => EventType::Modified,
        "DELETED" => EventType::Deleted,
        _ => return None,
    })
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Objects by key, as the store holds them.
type Objects = BTreeMap<ObjectKey, Arc<Value>>;

/// Keeps a record that frames well but cannot be read (a value the reader
/// refuses) in `quarantine/`, so recovery can go on without it and an
/// operator can look at it. Returns where it went.
fn quarantine(dir: &Path, label: &str, payload: &[u8]) -> io::Result<PathBuf> {
    let qdir = dir.join("quarantine");
    std::fs::create_dir_all(&qdir)?;
    let path = qdir.join(format!("{label}.record"));
    std::fs::write(&path, payload)?;
    Ok(path)
}

/// Loads a snapshot; `None` when it is incomplete or damaged. An object
/// record that cannot be read is quarantined and left out, with a warning,
/// rather than losing the whole snapshot (the log it covers is gone).
fn load_snapshot(path: &Path, warnings: &mut Vec<String>) -> io::Result<Option<(u64, Objects)>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let (frames, bad) = read_frames(&bytes);
    if bad.is_some() {
        return Ok(None);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut objects = BTreeMap::new();
    let mut version = None;
    let mut complete = false;
    let mut quarantined = 0u64;
    for (n, f) in frames.into_iter().enumerate() {
        let v = match serde_json::from_slice::<Value>(f) {
            Ok(v) => v,
            Err(e) if version.is_some() => {
                let q = quarantine(dir, &format!("{stem}-{n}"), f)?;
                warnings.push(format!(
                    "{}: object record {n} is unreadable ({e}); quarantined to {} and left out",
                    path.display(),
                    q.display()
                ));
                quarantined += 1;
                continue;
            }
            Err(_) => return Ok(None),
        };
        if let Some(rv) = v.get("snapshot").and_then(Value::as_u64) {
            version = Some(rv);
        } else if let Some(count) = v.get("end").and_then(Value::as_u64) {
            complete = count == objects.len() as u64 + quarantined;
        } else {
            let (Some(key), Some(obj)) = (v.get("key").and_then(key_from), v.get("object")) else {
                return Ok(None);
            };
            objects.insert(key, Arc::new(obj.clone()));
        }
    }
    Ok(match (version, complete) {
        (Some(v), true) => Some((v, objects)),
        _ => None,
    })
}

/// Writes a snapshot of `objects` at `version`, atomically, then removes
/// the snapshots and log segments it makes unnecessary.
pub fn write_snapshot(
    dir: &Path,
    version: u64,
    objects: &[(ObjectKey, Arc<Value>)],
) -> io::Result<()> {
    let tmp = dir.join(format!("snapshot-{version:020}.tmp"));
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        w.write_all(&frame(json!({"snapshot": version}).to_string().as_bytes()))?;
        for (key, obj) in objects {
            let rec = json!({"key": key_json(key), "object": &**obj});
            w.write_all(&frame(&serde_json::to_vec(&rec).map_err(io::Error::other)?))?;
        }
        w.write_all(&frame(json!({"end": objects.len()}).to_string().as_bytes()))?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    std::fs::rename(&tmp, snapshot_path(dir, version))?;
    sync_dir(dir)?;
    // Older snapshots, and segments holding only records up to `version`
    // (a segment's records end where the next one's begin).
    for (v, path) in numbered(dir, "snapshot-", ".snap")? {
        if v < version {
            std::fs::remove_file(path)?;
        }
    }
    let segments = numbered(dir, "log-", ".wal")?;
    for (i, (_, path)) in segments.iter().enumerate() {
        if segments
            .get(i + 1)
            .is_some_and(|(next, _)| *next <= version + 1)
        {
            std::fs::remove_file(path)?;
        }
    }
    sync_dir(dir)
}

impl Wal {
    /// Opens (creating) `dir`, recovers its contents and starts a fresh
    /// segment for new writes.
    pub fn open(dir: &Path, snapshot_every: u64) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let mut rec = Recovered::default();
        // Leftovers of a snapshot that never finished.
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                std::fs::remove_file(&path)?;
            }
        }
        for (v, path) in numbered(dir, "snapshot-", ".snap")?.into_iter().rev() {
            match load_snapshot(&path, &mut rec.warnings)? {
                Some((version, objects)) => {
                    rec.version = version;
                    rec.objects = objects;
                    break;
                }
                None => rec
                    .warnings
                    .push(format!("snapshot at version {v} is incomplete; skipped")),
            }
        }
        let segments = numbered(dir, "log-", ".wal")?;
        let last = segments.len().saturating_sub(1);
        for (i, (_, path)) in segments.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)?.read_to_end(&mut bytes)?;
            let (frames, bad) = read_frames(&bytes);
            let mut good_end = bad;
            let mut replayed = 0usize;
            for (n, f) in frames.iter().enumerate() {
                match replay(&mut rec, f) {
                    Ok(()) => replayed += 1,
                    Err(e) if i == last && n + 1 == frames.len() && bad.is_none() => {
                        // A final record that frames well but does not
                        // parse: treat it as torn too, keeping a copy.
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let q = quarantine(dir, &format!("{stem}-{n}"), f)?;
                        rec.version = rec.version.max(rv_hint(f).unwrap_or(0));
                        rec.warnings.push(format!(
                            "{}: {e}; the last record was cut off (a copy is in {})",
                            path.display(),
                            q.display()
                        ));
                        let offset: usize = frames[..n].iter().map(|f| f.len() + 8).sum::<usize>();
                        good_end = Some(offset);
                    }
                    Err(e) => {
                        // Its checksum is right, so the bytes are what was
                        // written; the reader refuses the value. Keep it
                        // aside and go on: one bad value must not make
                        // every other object unreachable.
                        let stem = path
                            .file_stem()
                            .map(|s| s.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let q = quarantine(dir, &format!("{stem}-{n}"), f)?;
                        // Its version stays used: none is handed out twice.
                        rec.version = rec.version.max(rv_hint(f).unwrap_or(0));
                        rec.warnings.push(format!(
                            "{}: record {n}: {e}; quarantined to {} and skipped (the object keeps its previous state)",
                            path.display(),
                            q.display()
                        ));
                    }
                }
            }
            if let Some(offset) = good_end {
                if i != last {
                    return Err(invalid(format!(
                        "{} is corrupt at byte {offset}, before the end of the log; refusing to start and lose acknowledged writes",
                        path.display()
                    )));
                }
                rec.warnings.push(format!(
                    "{}: dropped a torn tail of {} bytes after {replayed} good records",
                    path.display(),
                    bytes.len() - offset
                ));
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(offset as u64)?;
                f.sync_all()?;
            }
        }
        let path = segment_path(dir, rec.version + 1);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(dir)?;
        Ok((
            Wal {
                dir: dir.to_owned(),
                file,
                records: 0,
                snapshot_every: snapshot_every.max(1),
            },
            rec,
        ))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one write and waits until it is on disk.
    pub fn append(
        &mut self,
        version: u64,
        kind: EventType,
        key: &ObjectKey,
        object: &Value,
    ) -> io::Result<()> {
        let rec =
            json!({"rv": version, "type": kind.as_str(), "key": key_json(key), "object": object});
        let bytes = frame(&serde_json::to_vec(&rec).map_err(io::Error::other)?);
        self.file.write_all(&bytes)?;
        self.file.sync_data()?;
        self.records += 1;
        Ok(())
    }

    /// Is the segment long enough that the next snapshot is due?
    pub fn snapshot_due(&self) -> bool {
        self.records >= self.snapshot_every
    }

    /// Starts a new segment whose first record will be `next_version`.
    pub fn rotate(&mut self, next_version: u64) -> io::Result<()> {
        let path = segment_path(&self.dir, next_version);
        self.file = OpenOptions::new().create(true).append(true).open(&path)?;
        sync_dir(&self.dir)?;
        self.records = 0;
        Ok(())
    }
}

/// The resourceVersion of a record too damaged to parse: its top-level
/// `"rv":N`, which serde_json writes just before `"type"` (keys sorted).
fn rv_hint(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let at = text.rfind(",\"rv\":")? + 6;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    text[at + digits.len()..]
        .starts_with(",\"type\":")
        .then(|| digits.parse().ok())
        .flatten()
}

/// Applies one logged write to the recovered state.
fn replay(rec: &mut Recovered, payload: &[u8]) -> Result<(), String> {
    let v: Value =
        serde_json::from_slice(payload).map_err(|e| format!("unreadable record: {e}"))?;
    let version = v
        .get("rv")
        .and_then(Value::as_u64)
        .ok_or("a record without rv")?;
    if version <= rec.version {
        // Already in the snapshot.
        return Ok(());
    }
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .and_then(kind_from)
        .ok_or("a record without a valid type")?;
    let key = v
        .get("key")
        .and_then(key_from)
        .ok_or("a record without a valid key")?;
    let object = Arc::new(v.get("object").cloned().ok_or("a record without object")?);
    let previous = match kind {
        EventType::Deleted => rec.objects.remove(&key),
        _ => rec.objects.insert(key.clone(), object.clone()),
    };
    rec.version = version;
    rec.events.push(Event {
        resource_version: version,
        kind,
        key,
        object,
        previous: if kind == EventType::Modified {
            previous
        } else {
            None
        },
    });
    Ok(())
}

/// Reads the framed records of a file (for tests and tools).
pub fn read_records(path: &Path) -> io::Result<Vec<Value>> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path)?).read_to_end(&mut bytes)?;
    let (frames, _) = read_frames(&bytes);
    Ok(frames
        .into_iter()
        .filter_map(|f| serde_json::from_slice(f).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_reference_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn frames_stop_at_a_torn_or_corrupt_tail() {
        let mut bytes = frame(b"{\"a\":1}");
        bytes.extend(frame(b"{\"b\":2}"));
        let whole = bytes.len();
        let (frames, bad) = read_frames(&bytes);
        assert_eq!((frames.len(), bad), (2, None));
        for cut in [whole - 1, whole - 5, 15 + 3] {
            let (frames, bad) = read_frames(&bytes[..cut]);
            assert_eq!(frames.len(), 1, "cut at {cut}");
            assert_eq!(bad, Some(15));
        }
        let mut flipped = bytes.clone();
        flipped[whole - 2] ^= 0x55;
        assert_eq!(read_frames(&flipped).1, Some(15));
        // A garbage length is refused, not allocated.
        let mut huge = bytes[..15].to_vec();
        huge.extend([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(read_frames(&huge), (vec![&b"{\"a\":1}"[..]], Some(15)));
    }
}
