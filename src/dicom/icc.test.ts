import sharp from 'sharp';
import { attachIccToJpeg, attachIccToPng } from './icc';

/** A real profile to carry: the sRGB profile libvips attaches, read back from an image. */
async function srgbProfile(): Promise<Buffer> {
  const img = await sharp({ create: { width: 2, height: 2, channels: 3, background: '#808080' } })
    .withIccProfile('srgb')
    .png()
    .toBuffer();
  const icc = (await sharp(img).metadata()).icc;
  if (!icc) throw new Error('no profile');
  return icc;
}

const raw = Buffer.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
const image = () => sharp(raw, { raw: { width: 2, height: 2, channels: 3 } });

describe('attaching an ICC profile without changing pixels', () => {
  it('JPEG: the profile reads back byte for byte and the pixels are those of the image without it', async () => {
    const icc = await srgbProfile();
    const plain = await image().jpeg({ quality: 95 }).toBuffer();
    const withIcc = attachIccToJpeg(plain, icc);
    const meta = await sharp(withIcc).metadata();
    expect(meta.icc?.equals(icc)).toBe(true);
    // Decoding without colour management gives the same samples: nothing was transformed.
    const a = await sharp(plain).raw().toBuffer();
    const b = await sharp(withIcc).raw().toBuffer();
    expect(b.equals(a)).toBe(true);
  });

  it('JPEG: a profile larger than one APP2 segment is split and reassembled', async () => {
    const big = Buffer.concat([await srgbProfile(), Buffer.alloc(70000, 7)]);
    big.writeUInt32BE(big.length, 0); // the profile's own size field
    const withIcc = attachIccToJpeg(await image().jpeg().toBuffer(), big);
    expect((await sharp(withIcc).metadata()).icc?.equals(big)).toBe(true);
  });

  it('PNG: the profile reads back and the pixels are unchanged', async () => {
    const icc = await srgbProfile();
    const plain = await image().png().toBuffer();
    const withIcc = attachIccToPng(plain, icc);
    expect((await sharp(withIcc).metadata()).icc?.equals(icc)).toBe(true);
    expect((await sharp(withIcc).raw().toBuffer()).equals(raw)).toBe(true);
  });
});
