// A BlurHash decoder (https://blurha.sh), written for the playground from the
// algorithm's description: a DC colour and AC cosine components, base 83.

const DIGITS =
  "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";

function decode83(text) {
  let value = 0;
  for (const ch of text) {
    const digit = DIGITS.indexOf(ch);
    if (digit < 0) throw new Error(`blurhash: invalid character ${ch}`);
    value = value * 83 + digit;
  }
  return value;
}

function srgbToLinear(value) {
  const v = value / 255;
  return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
}

function linearToSrgb(value) {
  const v = Math.max(0, Math.min(1, value));
  return v <= 0.0031308
    ? Math.round(v * 12.92 * 255 + 0.5)
    : Math.round((1.055 * Math.pow(v, 1 / 2.4) - 0.055) * 255 + 0.5);
}

const signPow = (value, exp) => Math.sign(value) * Math.pow(Math.abs(value), exp);

/** The number of components across and down, or an error if `hash` is not a BlurHash. */
export function components(hash) {
  if (typeof hash !== "string" || hash.length < 6) throw new Error("blurhash: too short");
  const size = decode83(hash[0]);
  const x = (size % 9) + 1;
  const y = Math.floor(size / 9) + 1;
  if (hash.length !== 4 + 2 * x * y) {
    throw new Error(`blurhash: length ${hash.length}, expected ${4 + 2 * x * y}`);
  }
  return { x, y };
}

/** RGBA pixels (a Uint8ClampedArray of width × height × 4) of the placeholder. */
export function decode(hash, width, height, punch = 1) {
  const { x: numX, y: numY } = components(hash);
  const maximum = (decode83(hash[1]) + 1) / 166;
  const colors = new Array(numX * numY);
  const dc = decode83(hash.substring(2, 6));
  colors[0] = [srgbToLinear(dc >> 16), srgbToLinear((dc >> 8) & 255), srgbToLinear(dc & 255)];
  for (let i = 1; i < colors.length; i++) {
    const ac = decode83(hash.substring(4 + i * 2, 6 + i * 2));
    const scale = maximum * punch;
    colors[i] = [
      signPow((Math.floor(ac / (19 * 19)) - 9) / 9, 2) * scale,
      signPow((Math.floor(ac / 19) % 19 - 9) / 9, 2) * scale,
      signPow((ac % 19 - 9) / 9, 2) * scale,
    ];
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let py = 0; py < height; py++) {
    for (let px = 0; px < width; px++) {
      let r = 0, g = 0, b = 0;
      for (let j = 0; j < numY; j++) {
        const cy = Math.cos((Math.PI * py * j) / height);
        for (let i = 0; i < numX; i++) {
          const basis = Math.cos((Math.PI * px * i) / width) * cy;
          const c = colors[i + j * numX];
          r += c[0] * basis;
          g += c[1] * basis;
          b += c[2] * basis;
        }
      }
      const at = 4 * (px + py * width);
      pixels[at] = linearToSrgb(r);
      pixels[at + 1] = linearToSrgb(g);
      pixels[at + 2] = linearToSrgb(b);
      pixels[at + 3] = 255;
    }
  }
  return pixels;
}

/** Paints the placeholder onto a canvas (its own width and height). */
export function paint(canvas, hash) {
  const { width, height } = canvas;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  image.data.set(decode(hash, width, height));
  ctx.putImageData(image, 0, 0);
}
