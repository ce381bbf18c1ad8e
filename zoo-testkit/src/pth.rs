//! PyTorch files written without PyTorch: the zip layout and the protocol-2 pickle opcodes that
//! `torch.save(state_dict, f)` produces, for tests of the `.pth` reader and for fuzz seeds.

/// A zip archive of stored (uncompressed) entries, as `torch.save` writes them; the CRC is left 0 (the
/// readers under test do not check it).
pub fn zip_stored(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let fixed = |h: &mut Vec<u8>| {
            // Version needed, flags, method (stored), time, date, CRC.
            h.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0, 0]);
        };
        out.extend_from_slice(b"PK\x03\x04");
        fixed(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(b"PK\x01\x02\x14\x00");
        fixed(&mut central);
        // Comment length, disk, internal and external attributes.
        central.extend_from_slice(&[0; 10]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}

/// A `torch.save`-like archive of `pickle` and one 64-byte storage `archive/data/0`.
pub fn torch_zip(pickle: &[u8]) -> Vec<u8> {
    let storage: Vec<u8> = (0..64u8).collect();
    zip_stored(&[("archive/data.pkl", pickle), ("archive/data/0", &storage)])
}

/// Pickle pieces: protocol-2 opcodes, the ones `torch.save` uses.
pub mod pickle {
    /// `BINUNICODE`.
    pub fn string(s: &str) -> Vec<u8> {
        [&[b'X'][..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat()
    }
    /// `GLOBAL module\nclass\n`.
    pub fn global(module: &str, class: &str) -> Vec<u8> {
        format!("c{module}\n{class}\n").into_bytes()
    }
    /// `BININT`, or `LONG1` beyond 32 bits.
    pub fn int(v: i64) -> Vec<u8> {
        match i32::try_from(v) {
            Ok(i) => [&[b'J'][..], &i.to_le_bytes()].concat(),
            Err(_) => [&[0x8a, 8][..], &v.to_le_bytes()].concat(),
        }
    }
    /// `MARK items TUPLE`.
    pub fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
        [vec![b'('], items.concat(), vec![b't']].concat()
    }
    /// `_rebuild_tensor_v2(storage(key, FloatStorage, numel), offset, size, stride, False, {})`.
    pub fn tensor_in(key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        let storage = [
            tuple(&[
                string("storage"),
                global("torch", "FloatStorage"),
                string(key),
                string("cpu"),
                int(numel),
            ]),
            vec![b'Q'],
        ]
        .concat();
        let args = tuple(&[
            storage,
            int(offset),
            tuple(&size.iter().map(|&d| int(d)).collect::<Vec<_>>()),
            tuple(&stride.iter().map(|&d| int(d)).collect::<Vec<_>>()),
            vec![0x89],
            vec![b'}'],
        ]);
        [global("torch._utils", "_rebuild_tensor_v2"), args, vec![b'R']].concat()
    }
    /// [`tensor_in`] storage `0`.
    pub fn tensor(numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> Vec<u8> {
        tensor_in("0", numel, offset, size, stride)
    }
    /// `{name: value}` then STOP.
    pub fn dict(name: &str, value: Vec<u8>) -> Vec<u8> {
        [vec![0x80, 2, b'}'], string(name), value, vec![b's', b'.']].concat()
    }
}

/// A `.pth` state dict of f32 tensors, each `(name, shape, values)` in its own contiguous storage, as
/// `torch.save(model.state_dict(), f)` writes it.
pub fn state_dict(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    use pickle::*;
    let mut pkl = vec![0x80, 2, b'}', b'('];
    let mut storages: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, (name, shape, values)) in tensors.iter().enumerate() {
        let mut stride = vec![1i64; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * shape[d + 1] as i64;
        }
        let size: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        pkl.extend(string(name));
        pkl.extend(tensor_in(&i.to_string(), values.len() as i64, 0, &size, &stride));
        storages.push((
            format!("archive/data/{i}"),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    pkl.extend_from_slice(b"u.");
    let mut entries: Vec<(&str, &[u8])> = vec![("archive/data.pkl", &pkl), ("archive/version", b"3\n")];
    entries.extend(storages.iter().map(|(n, b)| (n.as_str(), b.as_slice())));
    zip_stored(&entries)
}
