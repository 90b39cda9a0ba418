//! Unit tests of the profile snapshot: packing and restoring a temporary profile of fake
//! LevelDB files.

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::time::{Duration, SystemTime};

use super::*;

const LS: &str = "Default/Local Storage/leveldb";
const IDB: &str = "Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb";

fn put(profile: &Path, rel: &str, bytes: &[u8]) {
    let path = profile.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

/// A profile as Chromium leaves it: LevelDB files in both login parts (with their `LOCK`s),
/// caches and preferences beside them, and the singleton locks at the top.
fn fake_profile(profile: &Path) {
    for dir in [LS, IDB] {
        put(profile, &format!("{dir}/CURRENT"), b"MANIFEST-000001\n");
        put(profile, &format!("{dir}/LOCK"), b"");
        put(profile, &format!("{dir}/LOG"), b"2026/12/07 opened\n");
        put(
            profile,
            &format!("{dir}/MANIFEST-000001"),
            &[0x56, 0, 1, 2, 3],
        );
        let log: Vec<u8> = (0..40_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        put(profile, &format!("{dir}/000003.log"), &log);
        put(profile, &format!("{dir}/000005.ldb"), &[7u8; 3000]);
    }
    put(
        profile,
        "Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.blob/1/00/3",
        b"blob",
    );
    put(profile, "Default/Cache/Cache_Data/data_0", &[1u8; 500]);
    put(profile, "Default/Preferences", b"{}");
    symlink("otherhost-4242", profile.join("SingletonLock")).unwrap();
    symlink(
        "/tmp/.org.chromium.Chromium.x/SingletonSocket",
        profile.join("SingletonSocket"),
    )
    .unwrap();
    symlink("12345", profile.join("SingletonCookie")).unwrap();
}

/// Every file under the login parts of `profile`, by relative path.
fn login_files(profile: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(profile, &mut |item| {
        if let Item::File { path, rel, .. } = item {
            out.insert(rel.display().to_string(), fs::read(path).unwrap());
        }
        Ok(())
    })
    .unwrap();
    out
}

fn mode(path: &Path) -> u32 {
    path.symlink_metadata().unwrap().permissions().mode() & 0o777
}

/// A snapshot holding exactly `entries` (kind, path, contents), with its digest.
fn crafted(entries: &[(u8, &str, &[u8])]) -> (Vec<u8>, String) {
    let mut z = GzEncoder::new(Vec::new(), Compression::fast());
    z.write_all(MAGIC).unwrap();
    for (kind, path, bytes) in entries {
        z.write_all(&[*kind]).unwrap();
        z.write_all(&(path.len() as u16).to_be_bytes()).unwrap();
        z.write_all(path.as_bytes()).unwrap();
        if *kind == FILE {
            z.write_all(&(bytes.len() as u64).to_be_bytes()).unwrap();
            z.write_all(bytes).unwrap();
        }
    }
    z.write_all(&[END]).unwrap();
    let data = z.finish().unwrap();
    let sha = hex::encode(Sha256::digest(&data));
    (data, sha)
}

#[test]
fn a_packed_profile_restores_the_same_files_at_the_same_paths() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    fake_profile(&src);
    let packed = pack(&src).unwrap();
    let before = login_files(&src);
    assert_eq!(before.len(), 11, "{:?}", before.keys());
    assert!(!before.keys().any(|k| k.ends_with("/LOCK")));
    assert_eq!(packed.files, 11);
    assert_eq!(
        packed.raw_bytes,
        before.values().map(|b| b.len() as u64).sum::<u64>()
    );
    assert!(
        packed.data.len() < packed.raw_bytes as usize / 2,
        "compressed"
    );
    assert_eq!(packed.sha256, hex::encode(Sha256::digest(&packed.data)));

    let dst = dir.path().join("b");
    let restored = restore(&dst, &packed.data, &packed.sha256).unwrap();
    assert_eq!(
        restored,
        Restored {
            files: packed.files,
            raw_bytes: packed.raw_bytes
        }
    );
    assert_eq!(login_files(&dst), before);
    assert!(!dst.join("Default/Cache").exists(), "caches do not travel");
    assert!(!dst.join(STAGING).exists());
    assert!(!dst.join(LS).join("LOCK").exists());
}

#[test]
fn restored_parts_have_private_modes_and_the_profile_stays_0700() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    fake_profile(&src);
    let packed = pack(&src).unwrap();
    let dst = dir.path().join("b");
    fs::create_dir(&dst).unwrap();
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).unwrap();
    restore(&dst, &packed.data, &packed.sha256).unwrap();
    assert_eq!(mode(&dst), 0o700);
    for d in [
        "Default",
        "Default/Local Storage",
        LS,
        "Default/IndexedDB",
        IDB,
    ] {
        assert_eq!(mode(&dst.join(d)), 0o700, "{d}");
    }
    for f in ["CURRENT", "000003.log", "MANIFEST-000001"] {
        assert_eq!(mode(&dst.join(LS).join(f)), 0o600, "{f}");
        assert_eq!(mode(&dst.join(IDB).join(f)), 0o600, "{f}");
    }
}

#[test]
fn a_restore_replaces_the_old_parts_removes_the_singletons_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    fake_profile(&src);
    let packed = pack(&src).unwrap();

    let dst = dir.path().join("b");
    fake_profile(&dst);
    put(&dst, &format!("{LS}/000009.ldb"), b"an old login");
    put(
        &dst,
        "Default/IndexedDB/https_other.example_0.indexeddb.leveldb/CURRENT",
        b"x",
    );
    put(
        &dst,
        &format!("{STAGING}/Default/IndexedDB/left/from/a/crash"),
        b"x",
    );
    restore(&dst, &packed.data, &packed.sha256).unwrap();

    assert!(!dst.join(LS).join("000009.ldb").exists());
    assert!(
        !dst.join("Default/IndexedDB/https_other.example_0.indexeddb.leveldb")
            .exists()
    );
    assert_eq!(login_files(&dst), login_files(&src));
    for name in SINGLETONS {
        assert!(dst.join(name).symlink_metadata().is_err(), "{name} is left");
    }
    assert_eq!(fs::read(dst.join("Default/Preferences")).unwrap(), b"{}");
    assert!(dst.join("Default/Cache/Cache_Data/data_0").exists());
    assert!(!dst.join(STAGING).exists());
}

#[test]
fn entries_outside_the_login_parts_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    fake_profile(&profile);
    let before = login_files(&profile);
    let outside = dir.path().join("escaped");
    for (kind, entry) in [
        (FILE, "../escaped"),
        (FILE, "Default/Local Storage/../../../escaped"),
        (DIR, "Default/IndexedDB/../../../escaped"),
        (FILE, "/tmp/escaped"),
        (FILE, "Default/Preferences"),
        (FILE, "Default/Local Storagex/y"),
        (FILE, "Default/./Local Storage/x"),
        (FILE, "Default/Local Storage"),
        (DIR, ""),
    ] {
        let (data, sha) = crafted(&[
            (DIR, "Default/Local Storage", b""),
            (FILE, "Default/Local Storage/ok", b"ok"),
            (kind, entry, b"evil"),
        ]);
        let err = restore(&profile, &data, &sha).unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnsafeEntry { .. }),
            "{entry}: {err:?}"
        );
        assert!(!outside.exists(), "{entry}");
        assert_eq!(
            login_files(&profile),
            before,
            "{entry}: the profile changed"
        );
        assert_eq!(
            fs::read(profile.join("Default/Preferences")).unwrap(),
            b"{}"
        );
        assert!(!profile.join(STAGING).exists(), "{entry}");
    }
}

#[test]
fn a_corrupted_or_truncated_snapshot_is_refused_and_the_profile_is_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    fake_profile(&src);
    let packed = pack(&src).unwrap();
    let dst = dir.path().join("b");
    put(&dst, &format!("{LS}/000009.ldb"), b"the login in place");

    let mut flipped = packed.data.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let err = restore(&dst, &flipped, &packed.sha256).unwrap_err();
    assert!(matches!(err, ArchiveError::Digest { .. }), "{err:?}");
    assert!(err.to_string().contains(&packed.sha256), "{err}");

    // A digest that matches bytes that are not a whole snapshot (cut short when stored).
    let cut = &packed.data[..packed.data.len() / 2];
    let sha = hex::encode(Sha256::digest(cut));
    let err = restore(&dst, cut, &sha).unwrap_err();
    assert!(matches!(err, ArchiveError::Format { .. }), "{err:?}");

    let err = restore(&dst, b"not gzip", &hex::encode(Sha256::digest(b"not gzip"))).unwrap_err();
    assert!(matches!(err, ArchiveError::Format { .. }), "{err:?}");

    assert_eq!(
        fs::read(dst.join(LS).join("000009.ldb")).unwrap(),
        b"the login in place"
    );
    assert_eq!(login_files(&dst).len(), 1);
    assert!(!dst.join(STAGING).exists());
}

#[test]
fn files_that_vanish_during_the_walk_and_links_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    fake_profile(&profile);
    put(dir.path(), "secret", b"not part of any profile");
    symlink(
        dir.path().join("secret"),
        profile.join(LS).join("000007.ldb"),
    )
    .unwrap();
    symlink(dir.path(), profile.join(IDB).join("linked-dir")).unwrap();

    let mut out = Writer {
        z: GzEncoder::new(Vec::new(), Compression::fast()),
        raw_bytes: 0,
        files: 0,
    };
    out.write(MAGIC).unwrap();
    let mut print = Fingerprint::default();
    let mut seen = Vec::new();
    walk(&profile, &mut |item| {
        if let Item::File { rel, path, .. } = &item {
            seen.push(rel.display().to_string());
            if rel.ends_with("000003.log") && rel.starts_with(LS) {
                // Chromium compacts: this file goes between its listing and its opening,
                // a later one of the same directory before it is even looked at, and the
                // whole IndexedDB directory before the walk gets there.
                fs::remove_file(path).unwrap();
                fs::remove_file(profile.join(LS).join("CURRENT")).unwrap();
                fs::remove_dir_all(profile.join("Default/IndexedDB")).unwrap();
            }
        }
        pack_item(&mut out, &mut print, item)
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            format!("{LS}/000003.log"),
            format!("{LS}/000005.ldb"),
            format!("{LS}/LOG"),
            format!("{LS}/MANIFEST-000001"),
        ]
    );
    assert_eq!(out.files, 3, "the vanished file is not packed");
    assert!(print.finish().is_some());

    // And through `pack` itself: links are neither followed nor packed.
    fake_profile(&dir.path().join("q"));
    let q = dir.path().join("q");
    symlink(dir.path().join("secret"), q.join(LS).join("000007.ldb")).unwrap();
    let packed = pack(&q).unwrap();
    let dst = dir.path().join("r");
    restore(&dst, &packed.data, &packed.sha256).unwrap();
    assert!(dst.join(LS).join("000007.ldb").symlink_metadata().is_err());
    assert_eq!(packed.files, 11);
}

#[test]
fn the_fingerprint_changes_when_a_login_file_changes_and_not_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p");
    assert_eq!(fingerprint(&profile).unwrap(), None, "no profile yet");
    fs::create_dir_all(profile.join(LS)).unwrap();
    put(&profile, &format!("{LS}/LOCK"), b"");
    assert_eq!(fingerprint(&profile).unwrap(), None, "no login file yet");

    fake_profile(&profile);
    let first = fingerprint(&profile).unwrap().unwrap();
    assert_eq!(fingerprint(&profile).unwrap().unwrap(), first);
    assert_eq!(pack(&profile).unwrap().fingerprint, first);

    // Caches, preferences, locks and the singletons are not the login.
    put(&profile, "Default/Cache/Cache_Data/data_1", b"more cache");
    put(&profile, "Default/Preferences", b"{\"changed\": true}");
    put(&profile, &format!("{LS}/LOCK"), b"x");
    fs::remove_file(profile.join("SingletonLock")).unwrap();
    assert_eq!(fingerprint(&profile).unwrap().unwrap(), first);

    // The same size, written again at another time.
    let log = profile.join(IDB).join("000005.ldb");
    let file = OpenOptions::new().write(true).open(&log).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    let second = fingerprint(&profile).unwrap().unwrap();
    assert_ne!(second, first);

    // A record appended.
    let mut file = OpenOptions::new()
        .append(true)
        .open(profile.join(LS).join("000003.log"))
        .unwrap();
    file.write_all(b"record").unwrap();
    drop(file);
    let third = fingerprint(&profile).unwrap().unwrap();
    assert_ne!(third, second);

    // A file renamed (LevelDB compaction output).
    fs::rename(
        profile.join(LS).join("000005.ldb"),
        profile.join(LS).join("000006.ldb"),
    )
    .unwrap();
    assert_ne!(fingerprint(&profile).unwrap().unwrap(), third);
}

#[test]
fn a_default_directory_that_is_a_link_is_neither_packed_nor_restored_through() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("a");
    fake_profile(&src);
    let packed = pack(&src).unwrap();

    let elsewhere = dir.path().join("elsewhere");
    fake_profile(&elsewhere);
    let profile = dir.path().join("p");
    fs::create_dir(&profile).unwrap();
    symlink(elsewhere.join("Default"), profile.join("Default")).unwrap();
    assert_eq!(fingerprint(&profile).unwrap(), None);
    assert_eq!(pack(&profile).unwrap().files, 0);

    put(
        &elsewhere,
        &format!("{LS}/000009.ldb"),
        b"not this profile's",
    );
    let err = restore(&profile, &packed.data, &packed.sha256).unwrap_err();
    assert!(matches!(err, ArchiveError::Io { .. }), "{err:?}");
    assert_eq!(
        fs::read(elsewhere.join(LS).join("000009.ldb")).unwrap(),
        b"not this profile's"
    );
    assert!(!profile.join(STAGING).exists());
}
