use super::*;

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn restored(images: &[StateImage]) -> StateMap<Bytes, Bytes> {
    let copy = StateMap::new();
    for image in images {
        if image.delta {
            copy.restore_delta(image.data.to_vec())
                .expect("delta applies");
        } else {
            copy.restore(image.data.to_vec()).expect("state restores");
        }
    }
    copy
}

#[test]
fn a_snapshot_since_the_latest_cursor_is_a_delta_of_what_changed() {
    let map = StateMap::new();
    map.insert(b("a"), b("1"));
    map.insert(b("b"), b("2"));
    let full = map.snapshot_since(None);
    assert!(!full.delta && !full.cursor.is_empty());

    map.insert(b("c"), b("3"));
    map.remove(&b("a")[..]);
    map.update(b("b"), |v| {
        assert_eq!(v, Some(&b("2")));
        b("22")
    });
    let delta = map.snapshot_since(Some(&full.cursor));
    assert!(delta.delta);
    assert_eq!(delta.base_cursor, full.cursor);
    let changes = decode_delta(delta.data.clone()).expect("a delta");
    assert_eq!(
        changes,
        vec![
            (b("a"), None),
            (b("b"), Some(b("22"))),
            (b("c"), Some(b("3")))
        ]
    );

    // Nothing changed since: an empty delta.
    let empty = map.snapshot_since(Some(&delta.cursor));
    assert!(empty.delta);
    assert_eq!(decode_delta(empty.data.clone()).expect("a delta"), vec![]);

    let copy = restored(&[full, delta, empty]);
    assert_eq!(copy.read(), map.read());
}

#[test]
fn any_other_cursor_gets_the_whole_map() {
    let map: StateMap<Bytes, Bytes> = StateMap::new();
    map.insert(b("k"), b("v"));
    let first = map.snapshot_since(None);
    let second = map.snapshot_since(Some(&first.cursor));
    assert!(second.delta);
    // `first` is no longer the latest cursor.
    let again = map.snapshot_since(Some(&first.cursor));
    assert!(!again.delta);
    // Another map's cursor never follows, even at the same count.
    let other: StateMap<Bytes, Bytes> = StateMap::new();
    let foreign = other.snapshot_since(None).cursor;
    assert!(!map.snapshot_since(Some(&foreign)).delta);
    // A restore starts the chain again.
    let latest = map.snapshot_since(None).cursor;
    map.restore(encode_full(&OrdMap::new())).expect("restores");
    assert!(!map.snapshot_since(Some(&latest)).delta);
}

#[test]
fn a_snapshot_is_consistent_while_writers_carry_on() {
    let map = std::sync::Arc::new(StateMap::new());
    let mut images = vec![map.snapshot_since(None)];
    let writer = {
        let map = map.clone();
        std::thread::spawn(move || {
            for i in 0..20_000u32 {
                map.insert(
                    Bytes::from(format!("k{:05}", i % 5000)),
                    Bytes::from(i.to_string()),
                );
                if i % 7 == 0 {
                    map.remove(&Bytes::from(format!("k{:05}", (i / 7) % 5000))[..]);
                }
            }
        })
    };
    while !writer.is_finished() {
        let cursor = images.last().map(|i| i.cursor.clone());
        images.push(map.snapshot_since(cursor.as_deref()));
    }
    writer.join().expect("the writer ran");
    let cursor = images.last().map(|i| i.cursor.clone());
    images.push(map.snapshot_since(cursor.as_deref()));
    assert!(images[1..].iter().all(|i| i.delta));
    assert_eq!(restored(&images).read(), map.read());
}

#[test]
fn malformed_bytes_are_refused_and_leave_the_map_as_it_was() {
    let map: StateMap<Bytes, Bytes> = StateMap::new();
    map.insert(b("keep"), b("me"));
    let mut whole = OrdMap::new();
    whole.insert(b("x"), b("1"));
    let good = encode_full(&whole);
    for (bad, want) in [
        (b"NOPE".to_vec(), "magic"),
        (good[..good.len() - 1].to_vec(), "truncated"),
        ([good.clone(), vec![0]].concat(), "unexpected bytes"),
    ] {
        let e = map.restore(bad).expect_err("refused");
        assert!(e.message().contains(want), "{}", e.message());
    }
    let unsorted = encode_delta(&[(b("b"), None), (b("a"), None)]);
    assert!(
        map.restore_delta(unsorted)
            .expect_err("refused")
            .message()
            .contains("not greater")
    );
    let mut bad_tag = encode_delta(&[(b("a"), None)]);
    *bad_tag.last_mut().expect("a tag") = 7;
    assert!(map.restore_delta(bad_tag).is_err());
    assert_eq!(map.get(&b("keep")[..]), Some(b("me")));
    assert_eq!(map.len(), 1);
}

/// The hex string of `field` in the `section` object of proto/testdata/state-vectors.json
/// (which the Python SDK's tests read too). Found by text, as this crate has no JSON
/// parser: the generator writes each of these fields once per section.
fn vector(section: &str, field: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../proto/testdata/state-vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("read state-vectors.json");
    let (_, rest) = text
        .split_once(&format!("\"{section}\": {{"))
        .unwrap_or_else(|| panic!("no {section} section in state-vectors.json"));
    let (_, rest) = rest
        .split_once(&format!("\"{field}\": \""))
        .unwrap_or_else(|| panic!("no {field} in the {section} section"));
    let hex = &rest[..rest.find('"').expect("a closing quote")];
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn writes_the_shared_state_map_vectors() {
    // The entries and changes of the `state_map` section, in the order it lists them.
    let mut entries = OrdMap::new();
    for (k, v) in [
        (&b"pears"[..], &b"2"[..]),
        (b"apples", b"3"),
        (b"pear", b""),
        (b"\xff", b"\x00\x01"),
    ] {
        entries.insert(Bytes::from_static(k), Bytes::from_static(v));
    }
    let full = vector("state_map", "full_hex");
    assert_eq!(encode_full(&entries), full);
    assert_eq!(decode_full(Bytes::from(full)), Ok(entries));

    // encode_delta takes the changes in key order, as StateMap::image_since gives them.
    let changes: Vec<(Bytes, Option<Bytes>)> = vec![
        (b("apples"), None),
        (b("cherries"), Some(b("10"))),
        (b("pear"), Some(b(""))),
        (b("pears"), Some(b("5"))),
    ];
    let delta = vector("state_map", "delta_hex");
    assert_eq!(encode_delta(&changes), delta);
    assert_eq!(decode_delta(Bytes::from(delta)), Ok(changes));
}
