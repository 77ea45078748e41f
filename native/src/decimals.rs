//! Parse-time checks of venue prices and sizes (sources/numbers.py, sources/typed.py).
//!
//! Exactly the rules of `candlewax/schema.py`: decimal text is `^[0-9]+(\.[0-9]+)?$`
//! (`DECIMAL_RE`), positive decimal text the same with at least one non-zero digit
//! (`POSITIVE_DECIMAL_RE`). Only exact `str` objects pass (a subclass does not, as in
//! the Python checks, which test `value.__class__ is str`). The answers are booleans
//! or None: the Python careful path, not this code, writes every error message.
//! tests/test_typed_decode.py fuzzes these against the regexes.

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

/// Some(true) for positive decimal text, Some(false) for zero decimal text, None
/// for anything else.
fn classify(text: &[u8]) -> Option<bool> {
    let mut i = 0;
    let mut nonzero = false;
    while i < text.len() && text[i].is_ascii_digit() {
        nonzero |= text[i] != b'0';
        i += 1;
    }
    if i == 0 {
        return None;
    }
    if i < text.len() {
        if text[i] != b'.' {
            return None;
        }
        i += 1;
        let fraction = i;
        while i < text.len() && text[i].is_ascii_digit() {
            nonzero |= text[i] != b'0';
            i += 1;
        }
        if i == fraction || i < text.len() {
            return None;
        }
    }
    Some(nonzero)
}

/// The class of an exact `str`'s text, None for any other object or text.
fn classify_str(value: &Bound<'_, PyAny>) -> Option<bool> {
    let text = value.downcast_exact::<PyString>().ok()?;
    // Fails (and returns None) only for text with lone surrogates: not decimal text.
    classify(text.to_str().ok()?.as_bytes())
}

fn positive(value: &Bound<'_, PyAny>) -> bool {
    classify_str(value) == Some(true)
}

fn size_ok(value: &Bound<'_, PyAny>, zero_ok: bool) -> bool {
    match classify_str(value) {
        Some(nonzero) => nonzero || zero_ok,
        None => false,
    }
}

/// True when every argument is a `str` of positive decimal text.
#[pyfunction(signature = (*values))]
fn positive_ok(values: &Bound<'_, PyTuple>) -> bool {
    values.iter_borrowed().all(|value| positive(&value))
}

/// True when every argument is a `str` of decimal text (zero included).
#[pyfunction(signature = (*values))]
fn decimal_ok(values: &Bound<'_, PyTuple>) -> bool {
    values.iter_borrowed().all(|value| size_ok(&value, true))
}

/// The (price, size) pairs of `levels`, a list of tuples or lists whose first two
/// elements are the price and size `str`s (more elements are ignored), or None
/// when any level breaks the rules: a positive price and a positive size (zero
/// allowed where `deletes`). Returns `levels` itself when each level already is a
/// 2-tuple, else a new list of 2-tuples.
#[pyfunction]
fn level_pairs<'py>(
    levels: &Bound<'py, PyAny>,
    deletes: bool,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let Ok(list) = levels.downcast_exact::<PyList>() else {
        return Ok(None);
    };
    let mut all_pairs = true;
    let count = list.len();
    for index in 0..count {
        let level = list.get_item(index)?;
        let (price, size, pair) = if let Ok(t) = level.downcast_exact::<PyTuple>() {
            let len = t.len();
            if len < 2 {
                return Ok(None);
            }
            (t.get_borrowed_item(0)?, t.get_borrowed_item(1)?, len == 2)
        } else if let Ok(l) = level.downcast_exact::<PyList>() {
            if l.len() < 2 {
                return Ok(None);
            }
            // A list owns its items only while it is not changed: hold them.
            let (price, size) = (l.get_item(0)?, l.get_item(1)?);
            if !positive(&price) || !size_ok(&size, deletes) {
                return Ok(None);
            }
            all_pairs = false;
            continue;
        } else {
            return Ok(None);
        };
        if !positive(&price) || !size_ok(&size, deletes) {
            return Ok(None);
        }
        all_pairs &= pair;
    }
    if all_pairs {
        return Ok(Some(list.clone()));
    }
    let py = levels.py();
    let out = PyList::empty(py);
    for level in list.iter() {
        let (price, size) = if let Ok(t) = level.downcast_exact::<PyTuple>() {
            (t.get_item(0)?, t.get_item(1)?)
        } else {
            let l = level.downcast_exact::<PyList>()?;
            (l.get_item(0)?, l.get_item(1)?)
        };
        out.append(PyTuple::new(py, [price, size])?)?;
    }
    Ok(Some(out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(positive_ok, m)?)?;
    m.add_function(wrap_pyfunction!(decimal_ok, m)?)?;
    m.add_function(wrap_pyfunction!(level_pairs, m)?)?;
    Ok(())
}
