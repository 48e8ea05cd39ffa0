//! The local transports as a caller sees them: a local child over pipes (`sh -c`) and an
//! in-process handler, carrying exact bytes both ways, with exit status and stderr.

use std::io::{Read, Write};

use barsync_transport::local::{InProcessTransport, LocalCommandTransport};
use barsync_transport::Transport;

fn pattern(length: usize) -> Vec<u8> {
    (0..length).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn round_trip(
    transport: &dyn Transport,
    command: &str,
    input: Vec<u8>,
) -> (Vec<u8>, Option<i32>, String) {
    let (mut reader, mut writer, exit) = transport.open(command).unwrap().split();
    let feeder = std::thread::spawn(move || {
        // A command may stop reading early (like `head`): a broken pipe is then expected.
        match writer.write_all(&input) {
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.unwrap(),
        }
        writer.close_write().unwrap();
    });
    let mut output = Vec::new();
    reader.read_to_end(&mut output).unwrap();
    feeder.join().unwrap();
    let exit = exit.wait().unwrap();
    (output, exit.code, exit.stderr_text())
}

#[test]
fn local_child_carries_exact_bytes_and_reports_exit_and_stderr() {
    let directory = tempfile::tempdir().unwrap();
    let transport = LocalCommandTransport::new().in_directory(directory.path());
    let input = pattern(20 * 1024 * 1024 + 3);
    let (output, code, _) = round_trip(&transport, "cat", input.clone());
    assert!(output == input && code == Some(0));
    let (output, code, stderr) = round_trip(
        &transport,
        "head -c 1000 > head.bin; pwd; echo warn >&2; exit 4",
        input.clone(),
    );
    assert_eq!(
        String::from_utf8(output).unwrap().trim(),
        directory
            .path()
            .canonicalize()
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!((code, stderr.as_str()), (Some(4), "warn"));
    assert_eq!(
        std::fs::read(directory.path().join("head.bin")).unwrap(),
        input[..1000]
    );
    let (_, code, stderr) = round_trip(&transport, "barsync-no-such-command", Vec::new());
    assert_eq!(code, Some(127));
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn in_process_handler_streams_both_directions_concurrently() {
    let transport = InProcessTransport::new("echo", |_, end| {
        let mut buffer = vec![0u8; 65536];
        loop {
            match end.input.read(&mut buffer) {
                Ok(0) => return 0,
                Ok(count) => end.output.write_all(&buffer[..count]).unwrap(),
                Err(_) => return 1,
            }
        }
    });
    let input = pattern(32 * 1024 * 1024);
    let (output, code, _) = round_trip(&transport, "echo", input.clone());
    assert!(output == input, "echoed bytes differ");
    assert_eq!(code, Some(0));
}
