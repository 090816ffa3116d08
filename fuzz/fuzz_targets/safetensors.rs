//! Any bytes given to the safetensors parser: an error or a file whose every tensor can be read and decoded.
#![no_main]

use conch_formats::{SafetensorsFile, TensorStore};
use conch_kernels::quant::dequantize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = SafetensorsFile::from_bytes(data.to_vec()) else {
        return;
    };
    for name in file.tensor_names() {
        let t = file.tensor(&name).expect("listed tensors exist");
        let mut out = vec![0f32; t.numel()];
        dequantize(t.dtype, &t.data, &mut out).expect("validated tensors decode");
    }
});
