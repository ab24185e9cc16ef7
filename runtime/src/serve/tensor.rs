//! Tensors as the protocol carries them: a datatype, a shape and little-endian element bytes (BYTES: a
//! list of byte strings), with the conversions to and from ONNX Runtime values.
//!
//! Element bytes stay bytes until a batch runs: merging requests into a batch is a concatenation, and a
//! request's data is checked against its shape before anything is allocated for it.

use std::fmt;

use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::ApiError;

/// The protocol's tensor datatypes (`"FP32"`, …) with Triton's configuration names (`TYPE_FP32`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
    Bf16,
}

const ALL: [DataType; 14] = [
    DataType::Bool,
    DataType::Uint8,
    DataType::Uint16,
    DataType::Uint32,
    DataType::Uint64,
    DataType::Int8,
    DataType::Int16,
    DataType::Int32,
    DataType::Int64,
    DataType::Fp16,
    DataType::Fp32,
    DataType::Fp64,
    DataType::Bytes,
    DataType::Bf16,
];

impl DataType {
    /// The protocol's name: `"FP32"`, `"BYTES"`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
            Self::Bf16 => "BF16",
        }
    }

    /// Parses the protocol's name.
    pub fn parse(s: &str) -> Option<Self> {
        ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Triton's `DataType` enum value (model_config.proto): TYPE_BOOL = 1 … TYPE_BF16 = 14.
    pub fn config_value(self) -> i32 {
        match self {
            Self::Bool => 1,
            Self::Uint8 => 2,
            Self::Uint16 => 3,
            Self::Uint32 => 4,
            Self::Uint64 => 5,
            Self::Int8 => 6,
            Self::Int16 => 7,
            Self::Int32 => 8,
            Self::Int64 => 9,
            Self::Fp16 => 10,
            Self::Fp32 => 11,
            Self::Fp64 => 12,
            Self::Bytes => 13,
            Self::Bf16 => 14,
        }
    }

    pub fn from_config_value(v: i32) -> Option<Self> {
        ALL.into_iter().find(|d| d.config_value() == v)
    }

    /// Triton's configuration name: `TYPE_FP32`; BYTES is `TYPE_STRING`.
    pub fn config_name(self) -> String {
        if self == Self::Bytes {
            "TYPE_STRING".into()
        } else {
            format!("TYPE_{}", self.as_str())
        }
    }

    /// Bytes per element; `None` for BYTES (variable length).
    pub fn size(self) -> Option<usize> {
        match self {
            Self::Bool | Self::Uint8 | Self::Int8 => Some(1),
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => Some(2),
            Self::Uint32 | Self::Int32 | Self::Fp32 => Some(4),
            Self::Uint64 | Self::Int64 | Self::Fp64 => Some(8),
            Self::Bytes => None,
        }
    }

    /// The datatype of an ONNX tensor element type, when the protocol has one.
    #[allow(clippy::wildcard_enum_match_arm)] // the rest (complex, float8, int4, …) have no protocol datatype
    pub fn from_onnx(t: TensorElementType) -> Option<Self> {
        Some(match t {
            TensorElementType::Float32 => Self::Fp32,
            TensorElementType::Float64 => Self::Fp64,
            TensorElementType::Float16 => Self::Fp16,
            TensorElementType::Bfloat16 => Self::Bf16,
            TensorElementType::Uint8 => Self::Uint8,
            TensorElementType::Uint16 => Self::Uint16,
            TensorElementType::Uint32 => Self::Uint32,
            TensorElementType::Uint64 => Self::Uint64,
            TensorElementType::Int8 => Self::Int8,
            TensorElementType::Int16 => Self::Int16,
            TensorElementType::Int32 => Self::Int32,
            TensorElementType::Int64 => Self::Int64,
            TensorElementType::Bool => Self::Bool,
            TensorElementType::String => Self::Bytes,
            _ => return None,
        })
    }

    /// Whether this server can run tensors of this type through ONNX Runtime.
    pub fn runnable(self) -> bool {
        !matches!(self, Self::Fp16 | Self::Bf16 | Self::Bytes)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tensor's elements.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Fixed-size elements, little-endian, row-major.
    Raw(Vec<u8>),
    /// BYTES elements.
    Bytes(Vec<Vec<u8>>),
}

/// A named tensor as requests and responses carry it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<usize>,
    pub data: Data,
}

/// The element count of `shape`, or why it is not one: a negative dimension, or a product past `u64`.
pub fn element_count(what: &str, shape: &[i64]) -> Result<usize, ApiError> {
    let mut n: usize = 1;
    for &d in shape {
        let d = usize::try_from(d).map_err(|_| ApiError::bad(format!("{what}: shape {shape:?} has a negative dimension")))?;
        n = n.checked_mul(d).ok_or_else(|| ApiError::bad(format!("{what}: shape {shape:?} has more elements than can be addressed")))?;
    }
    Ok(n)
}

/// Expected byte length of `count` fixed-size elements of `datatype`.
pub fn byte_len(what: &str, datatype: DataType, count: usize) -> Result<usize, ApiError> {
    let size = datatype.size().ok_or_else(|| ApiError::bad(format!("{what}: BYTES has no fixed element size")))?;
    count.checked_mul(size).ok_or_else(|| ApiError::bad(format!("{what}: {count} elements of {datatype} are more bytes than can be addressed")))
}

/// Splits the protocol's BYTES serialisation (each element a 4-byte little-endian length, then the bytes)
/// into exactly `count` elements; an element running past the end or bytes left over are errors.
pub fn split_bytes(what: &str, raw: &[u8], count: usize) -> Result<Vec<Vec<u8>>, ApiError> {
    // every element takes at least its 4-byte length, so a count the data cannot hold is refused first
    if count > raw.len() / 4 {
        return Err(ApiError::bad(format!("{what}: {} bytes cannot hold {count} BYTES elements", raw.len())));
    }
    let mut out = Vec::with_capacity(count);
    let mut at = 0usize;
    for i in 0..count {
        let len_bytes: [u8; 4] = raw
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ApiError::bad(format!("{what}: BYTES element {i} has no length prefix (data ends at byte {at})")))?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= raw.len())
            .ok_or_else(|| ApiError::bad(format!("{what}: BYTES element {i} says {len} bytes but only {} are left", raw.len() - at)))?;
        out.push(raw[at..end].to_vec());
        at = end;
    }
    if at != raw.len() {
        return Err(ApiError::bad(format!("{what}: {} bytes after the last of {count} BYTES elements", raw.len() - at)));
    }
    Ok(out)
}

/// The protocol's BYTES serialisation of `elements`.
pub fn join_bytes(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(elements.iter().map(|e| e.len() + 4).sum());
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

impl Tensor {
    /// A tensor from the protocol's raw bytes (binary extension, `raw_input_contents`), checked against its shape.
    pub fn from_raw(name: &str, datatype: DataType, shape: Vec<usize>, raw: &[u8]) -> Result<Self, ApiError> {
        let what = format!("input '{name}'");
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| ApiError::bad(format!("{what}: shape too large")))?;
        let data = if datatype == DataType::Bytes {
            Data::Bytes(split_bytes(&what, raw, count)?)
        } else {
            let want = byte_len(&what, datatype, count)?;
            if raw.len() != want {
                return Err(ApiError::bad(format!("{what}: {} bytes of data for shape {shape:?} of {datatype}, which needs {want} bytes", raw.len())));
            }
            Data::Raw(raw.to_vec())
        };
        Ok(Self { name: name.to_string(), datatype, shape, data })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The protocol's raw serialisation of the elements.
    pub fn raw_bytes(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.data {
            Data::Raw(b) => std::borrow::Cow::Borrowed(b),
            Data::Bytes(v) => std::borrow::Cow::Owned(join_bytes(v)),
        }
    }

    /// The elements as f32, for FP32 tensors.
    pub fn f32s(&self) -> Option<Vec<f32>> {
        match (&self.data, self.datatype) {
            (Data::Raw(b), DataType::Fp32) => Some(b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            _ => None,
        }
    }

    /// A FP32 tensor.
    pub fn from_f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Self {
        let mut raw = Vec::with_capacity(values.len() * 4);
        values.iter().for_each(|v| raw.extend_from_slice(&v.to_le_bytes()));
        Self { name: name.to_string(), datatype: DataType::Fp32, shape, data: Data::Raw(raw) }
    }

    /// Rows `rows` (along the first dimension) of this tensor.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        let total = self.shape.first().copied().unwrap_or(1).max(1);
        let per_row = self.len() / total;
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows.len();
        }
        let data = match &self.data {
            Data::Raw(b) => {
                let w = per_row * self.datatype.size().unwrap_or(1);
                Data::Raw(b[rows.start * w..rows.end * w].to_vec())
            }
            Data::Bytes(v) => Data::Bytes(v[rows.start * per_row..rows.end * per_row].to_vec()),
        };
        Self { name: self.name.clone(), datatype: self.datatype, shape, data }
    }

    /// Concatenates tensors of one name, type and trailing shape along the first dimension.
    pub fn concat(parts: &[&Tensor]) -> Self {
        let first = parts[0];
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|t| t.shape[0]).sum();
        let data = match &first.data {
            Data::Raw(_) => {
                let mut raw = Vec::with_capacity(parts.iter().map(|t| if let Data::Raw(b) = &t.data { b.len() } else { 0 }).sum());
                for t in parts {
                    if let Data::Raw(b) = &t.data {
                        raw.extend_from_slice(b);
                    }
                }
                Data::Raw(raw)
            }
            Data::Bytes(_) => {
                let mut all = Vec::with_capacity(parts.iter().map(|t| t.len()).sum());
                for t in parts {
                    if let Data::Bytes(v) = &t.data {
                        all.extend(v.iter().cloned());
                    }
                }
                Data::Bytes(all)
            }
        };
        Self { name: first.name.clone(), datatype: first.datatype, shape, data }
    }

    /// This tensor as an ONNX Runtime value.
    pub fn to_ort(&self) -> Result<DynValue, String> {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        let Data::Raw(b) = &self.data else {
            return Err(format!("input '{}': BYTES tensors cannot be fed to this model", self.name));
        };
        macro_rules! le {
            ($t:ty, $n:literal) => {{
                let v: Vec<$t> = b.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk size"))).collect();
                OrtTensor::from_array((shape, v)).map(|t| t.into_dyn()).map_err(|e| e.to_string())
            }};
        }
        match self.datatype {
            DataType::Fp32 => le!(f32, 4),
            DataType::Fp64 => le!(f64, 8),
            DataType::Int8 => le!(i8, 1),
            DataType::Int16 => le!(i16, 2),
            DataType::Int32 => le!(i32, 4),
            DataType::Int64 => le!(i64, 8),
            DataType::Uint8 => le!(u8, 1),
            DataType::Uint16 => le!(u16, 2),
            DataType::Uint32 => le!(u32, 4),
            DataType::Uint64 => le!(u64, 8),
            DataType::Bool => {
                let v: Vec<bool> = b.iter().map(|&x| x != 0).collect();
                OrtTensor::from_array((shape, v)).map(|t| t.into_dyn()).map_err(|e| e.to_string())
            }
            d @ (DataType::Fp16 | DataType::Bf16 | DataType::Bytes) => Err(format!("input '{}': {d} is not supported by this server", self.name)),
        }
    }

    /// An ONNX Runtime output value as a tensor named `name`.
    pub fn from_ort(name: &str, value: &DynValue) -> Result<Self, String> {
        let ValueType::Tensor { ty, .. } = value.dtype() else {
            return Err(format!("output '{name}' is {}, not a tensor", value.dtype()));
        };
        let datatype = DataType::from_onnx(*ty).filter(|d| d.runnable()).ok_or_else(|| format!("output '{name}': element type {ty:?} is not supported"))?;
        macro_rules! le {
            ($t:ty) => {{
                let (shape, v) = value.try_extract_tensor::<$t>().map_err(|e| format!("output '{name}': {e}"))?;
                let mut raw = Vec::with_capacity(v.len() * std::mem::size_of::<$t>());
                v.iter().for_each(|x| raw.extend_from_slice(&x.to_le_bytes()));
                (shape.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>(), raw)
            }};
        }
        let (shape, raw) = match datatype {
            DataType::Fp32 => le!(f32),
            DataType::Fp64 => le!(f64),
            DataType::Int8 => le!(i8),
            DataType::Int16 => le!(i16),
            DataType::Int32 => le!(i32),
            DataType::Int64 => le!(i64),
            DataType::Uint8 => le!(u8),
            DataType::Uint16 => le!(u16),
            DataType::Uint32 => le!(u32),
            DataType::Uint64 => le!(u64),
            DataType::Bool => {
                let (shape, v) = value.try_extract_tensor::<bool>().map_err(|e| format!("output '{name}': {e}"))?;
                (shape.iter().map(|&d| d.max(0) as usize).collect(), v.iter().map(|&x| u8::from(x)).collect())
            }
            DataType::Fp16 | DataType::Bf16 | DataType::Bytes => unreachable!("filtered by runnable()"),
        };
        Ok(Self { name: name.to_string(), datatype, shape, data: Data::Raw(raw) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
            assert_eq!(DataType::from_config_value(d.config_value()), Some(d));
        }
        assert_eq!(DataType::Bytes.config_name(), "TYPE_STRING");
        assert_eq!(DataType::Fp32.config_name(), "TYPE_FP32");
        assert_eq!(DataType::parse("fp32"), None);
    }

    #[test]
    fn bytes_elements_are_length_prefixed_and_checked() {
        let els = vec![b"ab".to_vec(), vec![], b"xyz".to_vec()];
        let raw = join_bytes(&els);
        assert_eq!(raw.len(), 4 * 3 + 5);
        assert_eq!(split_bytes("t", &raw, 3).unwrap(), els);
        // fewer elements than the data holds: bytes left over
        assert!(split_bytes("t", &raw, 2).unwrap_err().to_string().contains("after the last"));
        // an element whose length runs past the end
        let mut lying = raw.clone();
        lying[0] = 200;
        assert!(split_bytes("t", &lying, 3).unwrap_err().to_string().contains("says 200 bytes"));
        // a count the bytes cannot possibly hold is refused before anything is allocated
        assert!(split_bytes("t", &raw, usize::MAX).unwrap_err().to_string().contains("cannot hold"));
    }

    #[test]
    fn shapes_that_overflow_or_go_negative_are_refused() {
        assert_eq!(element_count("x", &[2, 3, 4]).unwrap(), 24);
        assert!(element_count("x", &[1 << 40, 1 << 40]).unwrap_err().to_string().contains("more elements"));
        assert!(element_count("x", &[2, -1]).unwrap_err().to_string().contains("negative"));
        assert!(byte_len("x", DataType::Fp32, usize::MAX / 2).is_err());
    }

    #[test]
    fn rows_and_concat_are_inverse() {
        let a = Tensor::from_f32("x", vec![2, 3], &[1., 2., 3., 4., 5., 6.]);
        let b = Tensor::from_f32("x", vec![1, 3], &[7., 8., 9.]);
        let ab = Tensor::concat(&[&a, &b]);
        assert_eq!(ab.shape, vec![3, 3]);
        assert_eq!(ab.f32s().unwrap(), vec![1., 2., 3., 4., 5., 6., 7., 8., 9.]);
        assert_eq!(ab.rows(0..2), a);
        assert_eq!(ab.rows(2..3), b);
        let raw = Tensor::from_raw("x", DataType::Fp32, vec![1, 3], &b.raw_bytes()).unwrap();
        assert_eq!(raw, b);
        assert!(Tensor::from_raw("x", DataType::Fp32, vec![2, 3], &b.raw_bytes()).unwrap_err().to_string().contains("needs 24 bytes"));
    }
}
