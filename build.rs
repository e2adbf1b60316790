//! Compiles `proto/**/*.proto` into tonic/prost code, writes the file descriptor
//! set that server reflection serves, and generates the per-method idempotency
//! table the mesh client's retry policy reads (from protobuf's standard
//! `option idempotency_level`).

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use prost::Message;
use prost_types::{method_options::IdempotencyLevel, FileDescriptorSet};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let protos = find_protos(Path::new("proto"))?;
    println!("cargo:rerun-if-changed=proto");

    // protoc shipped inside a Rust crate (protoc-bin-vendored): a machine with
    // only Rust can build.
    env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);

    let descriptor_path = out_dir.join("mesh_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // One file of nested modules for every package (`mesh::users::v1`…),
        // so a new .proto needs no edit in src/proto.rs.
        .include_file("mesh_protos.rs")
        // prost with buffers sized for the mesh's messages (src/proto/codec.rs).
        .codec_path("crate::proto::codec::ProstCodec")
        .compile_protos(&protos, &[PathBuf::from("proto")])?;

    let descriptors = FileDescriptorSet::decode(fs::read(&descriptor_path)?.as_slice())?;
    fs::write(
        out_dir.join("idempotency_table.rs"),
        idempotency_table(&descriptors),
    )?;
    Ok(())
}

fn find_protos(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(find_protos(&path)?);
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// One `("/package.Service/Method", Idempotency::…)` row per RPC, sorted by path
/// so the lookup can binary-search.
fn idempotency_table(descriptors: &FileDescriptorSet) -> String {
    let mut rows = Vec::new();
    for file in &descriptors.file {
        for service in &file.service {
            for method in &service.method {
                let level = method
                    .options
                    .as_ref()
                    .map(|options| options.idempotency_level())
                    .unwrap_or(IdempotencyLevel::IdempotencyUnknown);
                let variant = match level {
                    IdempotencyLevel::NoSideEffects => "NoSideEffects",
                    IdempotencyLevel::Idempotent => "Idempotent",
                    IdempotencyLevel::IdempotencyUnknown => "Unknown",
                };
                rows.push(format!(
                    "    (\"/{}.{}/{}\", Idempotency::{variant}),\n",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    rows.sort();
    format!(
        "/// Every RPC of `proto/` with its declared idempotency, sorted by path.\n\
         pub static METHODS: &[(&str, Idempotency)] = &[\n{}];\n",
        rows.concat()
    )
}
