//! The Open Inference Protocol (KServe v2, Triton's HTTP/REST) as JSON: model metadata, and an inference
//! request's FP32 input tensor checked against the model before anything is computed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `POST /v2/models/{name}/infer`'s body.
#[derive(Debug, Deserialize)]
pub struct InferRequest {
    /// Echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    /// The input tensors (this server's models take one).
    pub inputs: Vec<InferInput>,
    /// The outputs asked for (`logits`, `probabilities`); all when absent.
    #[serde(default)]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// One input tensor.
#[derive(Debug, Deserialize)]
pub struct InferInput {
    /// Its name (`input`).
    pub name: String,
    /// Its shape, `[N, C, H, W]`.
    pub shape: Vec<i64>,
    /// Its element type; only `FP32` is taken.
    pub datatype: String,
    /// Row-major values, flat or nested.
    pub data: Value,
}

/// An output asked for.
#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    /// `logits` or `probabilities`.
    pub name: String,
}

/// One output tensor of an answer.
#[derive(Debug, Serialize)]
pub struct OutputTensor {
    /// `logits` or `probabilities`.
    pub name: String,
    /// `[N, classes]`.
    pub shape: Vec<usize>,
    /// `FP32`.
    pub datatype: &'static str,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// What a model takes and gives, for `GET /v2/models/{name}`.
#[derive(Debug, Serialize)]
pub struct TensorMetadata {
    /// The tensor's name.
    pub name: &'static str,
    /// `FP32`.
    pub datatype: &'static str,
    /// The shape, -1 for the batch.
    pub shape: Vec<i64>,
}

/// A checked input: `n` items of shape `(c, h, w)`, row-major.
#[derive(Debug)]
pub struct CheckedInput {
    /// Items in the batch.
    pub n: usize,
    /// Values, `n * c * h * w` of them, all finite.
    pub values: Vec<f32>,
}

/// The largest batch one request may carry.
pub const MAX_ITEMS: usize = 256;

/// Checks an inference request against a model taking `(c, h, w)` inputs.
pub fn check_input(req: &InferRequest, chw: [usize; 3]) -> Result<CheckedInput, String> {
    let [input] = req.inputs.as_slice() else {
        return Err(format!("expected one input tensor, got {}", req.inputs.len()));
    };
    if input.datatype != "FP32" {
        return Err(format!(
            "input `{}`: datatype {} is not supported (FP32)",
            input.name, input.datatype
        ));
    }
    let want = [chw[0] as i64, chw[1] as i64, chw[2] as i64];
    let n = match input.shape.as_slice() {
        [n, c, h, w] if [*c, *h, *w] == want && *n >= 1 && *n as usize <= MAX_ITEMS => *n as usize,
        [c, h, w] if [*c, *h, *w] == want => 1,
        other => {
            return Err(format!(
                "input `{}`: shape {other:?} does not fit the model, which takes [N, {}, {}, {}] with 1 <= N <= {MAX_ITEMS}",
                input.name, chw[0], chw[1], chw[2]
            ))
        }
    };
    let expected = n * chw.iter().product::<usize>();
    let mut values = Vec::with_capacity(expected);
    flatten(&input.data, &mut values, expected).map_err(|e| format!("input `{}`: {e}", input.name))?;
    if values.len() != expected {
        return Err(format!(
            "input `{}`: {} values for shape {:?} (which holds {expected})",
            input.name,
            values.len(),
            input.shape
        ));
    }
    Ok(CheckedInput { n, values })
}

/// Appends the numbers of `v` (nested arrays allowed) to `out`, refusing more than `limit` and non-finite
/// or non-numeric values.
fn flatten(v: &Value, out: &mut Vec<f32>, limit: usize) -> Result<(), String> {
    match v {
        Value::Array(items) => {
            for item in items {
                flatten(item, out, limit)?;
            }
            Ok(())
        }
        Value::Number(x) => {
            if out.len() >= limit {
                return Err(format!("more values than the shape holds ({limit})"));
            }
            let f = x.as_f64().map(|f| f as f32).filter(|f| f.is_finite());
            out.push(f.ok_or_else(|| format!("{x} is not a finite float32"))?);
            Ok(())
        }
        other => Err(format!("data must hold numbers, found {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::String(_) => "a string",
        Value::Object(_) => "an object",
        _ => "a value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(shape: &[i64], datatype: &str, data: Value) -> InferRequest {
        serde_json::from_value(serde_json::json!({
            "inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]
        }))
        .unwrap()
    }

    #[test]
    fn inputs_are_checked_against_the_model() {
        let ok = check_input(
            &req(&[2, 1, 1, 2], "FP32", serde_json::json!([[[[1, 2]]], [[[3, 4.5]]]])),
            [1, 1, 2],
        )
        .unwrap();
        assert_eq!((ok.n, ok.values), (2, vec![1.0, 2.0, 3.0, 4.5]));
        let flat = check_input(&req(&[1, 2], "FP32", serde_json::json!([1, 2])), [1, 1, 2]);
        assert!(flat.unwrap_err().contains("does not fit"));
        let cases = [
            req(&[1, 1, 1, 2], "INT8", serde_json::json!([1, 2])),
            req(&[1, 1, 1, 2], "FP32", serde_json::json!([1, 2, 3])),
            req(&[1, 1, 1, 2], "FP32", serde_json::json!([1])),
            req(&[1, 1, 1, 2], "FP32", serde_json::json!([1, "x"])),
            req(&[1, 1, 1, 3], "FP32", serde_json::json!([1, 2, 3])),
            req(&[0, 1, 1, 2], "FP32", serde_json::json!([])),
            req(&[1, 1, 1, 2], "FP32", serde_json::json!([1, 1e39])),
        ];
        for r in cases {
            assert!(check_input(&r, [1, 1, 2]).is_err());
        }
    }
}
