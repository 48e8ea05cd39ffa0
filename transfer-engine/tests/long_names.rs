//! Temporary and partial files of names near the 255-byte limit of a file name: the names
//! barsync makes from them stay within it, stay distinct, and stay recognizable.

use std::io::Write;
use std::path::Path;

use transfer_engine::copy::partial_path;
use transfer_engine::fs::TempFile;

#[test]
fn a_file_with_a_255_byte_name_is_published_through_a_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    for len in [1, 200, 233, 234, 240, 254, 255] {
        let destination = dir.path().join("n".repeat(len));
        let mut temp = TempFile::beside(&destination).unwrap();
        let temp_name = temp.path().file_name().unwrap().len();
        assert!(
            temp_name <= 255,
            "{len}: temporary name of {temp_name} bytes"
        );
        temp.file().write_all(b"data").unwrap();
        temp.publish().unwrap();
        assert_eq!(std::fs::read(&destination).unwrap(), b"data");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn partial_names_of_long_names_fit_are_distinct_and_recognizable() {
    let short = partial_path(Path::new("dir/name"));
    assert_eq!(short, Path::new("dir/.name.barsync-partial"));
    let a = format!("{}a", "x".repeat(254));
    let b = format!("{}b", "x".repeat(254));
    let (pa, pb) = (
        partial_path(&Path::new("dir").join(&a)),
        partial_path(&Path::new("dir").join(&b)),
    );
    assert_ne!(pa, pb);
    for partial in [&pa, &pb] {
        let name = partial.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(name.starts_with(".xxxxxxxx") && name.ends_with(".barsync-partial"));
        assert_eq!(partial.parent().unwrap(), Path::new("dir"));
        // It can be created.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&name), b"x").unwrap();
    }
    // A multi-byte character at the cut is not split.
    let wide = "é".repeat(127);
    let partial = partial_path(Path::new(&wide));
    assert!(partial.to_str().is_some() && partial.as_os_str().len() <= 255);
}
