//! The limits the docs quote are the constants' values: each sentence below
//! is built from the constant and must appear in the document, so changing a
//! limit without its docs (or the docs without the code) fails here.

use std::path::Path;

/// `bytes` as the docs write sizes: `4 MiB`, `256 KiB`.
fn size(bytes: usize) -> String {
    match bytes {
        b if b % (1024 * 1024) == 0 => format!("{} MiB", b / (1024 * 1024)),
        b if b % 1024 == 0 => format!("{} KiB", b / 1024),
        b => format!("{b} bytes"),
    }
}

fn read(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

#[test]
fn the_docs_quote_the_limits_the_code_enforces() {
    let quotes = [
        (
            "docs/architecture.md",
            format!(
                "`MAX_MESSAGE_BYTES` ({}) is RESOURCE_EXHAUSTED",
                size(mesh::limits::MAX_MESSAGE_BYTES)
            ),
        ),
        (
            "docs/architecture.md",
            format!(
                "An order has at most {} lines",
                mesh::validate::MAX_ORDER_LINES
            ),
        ),
        (
            "docs/architecture.md",
            format!(
                "orders decodes at most\n{} per request (`orders::MAX_REQUEST_BYTES`)",
                size(orders::MAX_REQUEST_BYTES)
            ),
        ),
        (
            "docs/architecture.md",
            format!(
                "(`mesh::bounded`: at most {} problems named, the rest counted; message ≤ {}, details ≤ {}, `mesh::limits`)",
                mesh::bounded::MAX_LISTED,
                size(mesh::limits::MAX_STATUS_MESSAGE_BYTES),
                size(mesh::limits::MAX_STATUS_DETAILS_BYTES)
            ),
        ),
        (
            "docs/SAGA.md",
            format!("limit {}", size(orders::MAX_REQUEST_BYTES)),
        ),
        (
            "docs/SAGA.md",
            format!(
                "must have at most {} lines",
                mesh::validate::MAX_ORDER_LINES
            ),
        ),
        (
            "docs/adr/0007-mesh-client-stack.md",
            format!("buffered (up to {})", size(mesh::limits::MAX_MESSAGE_BYTES)),
        ),
    ];
    let mut missing = Vec::new();
    for (path, quote) in &quotes {
        // Compare with line breaks as spaces: the docs are wrapped by hand.
        let text = read(path).replace('\n', " ");
        if !text.contains(&quote.replace('\n', " ")) {
            missing.push(format!("{path}: {quote:?}"));
        }
    }
    assert!(
        missing.is_empty(),
        "docs that do not say what the code does:\n{}",
        missing.join("\n")
    );
}

#[test]
fn sizes_are_written_as_the_docs_write_them() {
    assert_eq!(size(4 * 1024 * 1024), "4 MiB");
    assert_eq!(size(256 * 1024), "256 KiB");
    assert_eq!(size(1000), "1000 bytes");
}
