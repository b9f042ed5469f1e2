'use strict';
// Tensors on the wire (asyncrl.v1.Tensor): raw little-endian, C-order bytes of product(shape)
// elements of dtype. Decoded to Float64Array for arithmetic; gradients encoded as float32.

const DTYPE_SIZES = { DTYPE_FLOAT32: 4, DTYPE_FLOAT16: 2, DTYPE_BFLOAT16: 2 };

class TensorFormatError extends Error {}

function product(shape) {
  return shape.reduce((n, d) => n * d, 1);
}

/** A shape as plain numbers (int64 arrives as strings with longs: String). */
function toShape(shape) {
  return shape.map((d) => Number(d));
}

/** IEEE 754 binary16 bits -> number. */
function halfToNumber(bits) {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24; // subnormal (or zero)
  if (exponent === 0x1f) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}

/**
 * Decodes one wire tensor to a Float64Array, checking dtype and byte length against its shape.
 * `data` is a Buffer that may sit at any offset of a larger ArrayBuffer (unaligned), so it is
 * read through a DataView (explicitly little-endian), never viewed in place as a Float32Array.
 */
function decodeTensor(message) {
  const size = DTYPE_SIZES[message.dtype];
  if (size === undefined) throw new TensorFormatError(`tensor ${message.name}: unsupported dtype ${message.dtype}`);
  const shape = toShape(message.shape);
  const count = product(shape);
  const data = message.data;
  if (data.length !== count * size) {
    throw new TensorFormatError(
      `tensor ${message.name}: ${data.length} bytes, but shape [${shape}] of ${message.dtype} needs ${count * size}`);
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const out = new Float64Array(count);
  if (message.dtype === 'DTYPE_FLOAT32') {
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
  } else if (message.dtype === 'DTYPE_FLOAT16') {
    for (let i = 0; i < count; i++) out[i] = halfToNumber(view.getUint16(2 * i, true));
  } else { // bfloat16: the upper 16 bits of a float32
    const scratch = new DataView(new ArrayBuffer(4));
    for (let i = 0; i < count; i++) {
      scratch.setUint32(0, view.getUint16(2 * i, true) << 16, true);
      out[i] = scratch.getFloat32(0, true);
    }
  }
  return { shape, values: out };
}

/** Decodes a parameter-shaped list, checking count, order, names and shapes against the layout. */
function decodeLayout(messages, layout, what) {
  if (messages.length !== layout.length) {
    throw new TensorFormatError(`${what}: got ${messages.length} tensors, the layout has ${layout.length}`);
  }
  return layout.map((spec, i) => {
    const message = messages[i];
    if (message.name !== spec.name) {
      throw new TensorFormatError(`${what}: got tensor ${message.name} where the layout has ${spec.name}`);
    }
    const decoded = decodeTensor(message);
    if (decoded.shape.join(',') !== spec.shape.join(',')) {
      throw new TensorFormatError(`${what}: ${spec.name} has shape [${decoded.shape}], the layout says [${spec.shape}]`);
    }
    return decoded.values;
  });
}

/** Encodes values (any numeric array) as a DTYPE_FLOAT32 wire tensor: 4 little-endian bytes per element. */
function encodeFloat32(name, shape, values) {
  if (values.length !== product(shape)) {
    throw new TensorFormatError(`tensor ${name}: ${values.length} values for shape [${shape}]`);
  }
  const data = Buffer.alloc(4 * values.length);
  for (let i = 0; i < values.length; i++) data.writeFloatLE(values[i], 4 * i);
  return { name, dtype: 'DTYPE_FLOAT32', shape: shape.map(String), data };
}

module.exports = { DTYPE_SIZES, TensorFormatError, decodeTensor, decodeLayout, encodeFloat32, halfToNumber, product, toShape };
