// The playground's own BlurHash decoder gives the pixels of the reference
// implementation (the `blurhash` package), for hashes of several sizes and for
// one that the API made.
import { test, expect } from "@playwright/test";
import { decode as reference, encode } from "blurhash";
import { components, decode } from "../../playground/blurhash.mjs";

/** A deterministic picture: gradients and a few bright bands. */
function picture(w, h) {
  const px = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = 4 * (y * w + x);
      px[i] = (x * 255) / w;
      px[i + 1] = (y * 255) / h;
      px[i + 2] = (x + y) % 17 < 5 ? 240 : 30;
      px[i + 3] = 255;
    }
  }
  return px;
}

const HASHES = [
  "LEHV6nWB2yk8pyo0adR*.7kCMdnj", // blurha.sh's example, 4×3
  ...[[1, 1], [4, 3], [9, 9], [3, 7]].map(([cx, cy]) => encode(picture(40, 30), 40, 30, cx, cy)),
];

test("the playground's BlurHash decoder matches the reference implementation", () => {
  for (const hash of HASHES) {
    for (const [w, h] of [[32, 32], [32, 21], [7, 13]]) {
      const ours = decode(hash, w, h);
      const theirs = reference(hash, w, h);
      expect(ours.length).toBe(w * h * 4);
      // Same pixels, give or take one step of rounding.
      const worst = ours.reduce((max, v, i) => Math.max(max, Math.abs(v - theirs[i])), 0);
      expect(worst, `${hash} at ${w}×${h}`).toBeLessThanOrEqual(1);
    }
  }
  expect(components("LEHV6nWB2yk8pyo0adR*.7kCMdnj")).toEqual({ x: 4, y: 3 });
  expect(() => decode("LEHV6nWB2yk8pyo0adR*.7kCMdn", 4, 4)).toThrow(/length/);
  expect(() => decode("LEHV6nWB2yk8pyo0adR*.7kCMd\u00e9j", 4, 4)).toThrow(/invalid character/);
});
