import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildCommandLine, DescriptorError, validateDescriptor, validateParams } from './descriptor';
import { sandboxArgv } from './sandbox';

const shipped = (name: string) =>
  JSON.parse(readFileSync(join(__dirname, '../../pipelines/descriptors', `${name}.json`), 'utf8')) as unknown;

describe('Boutiques descriptors', () => {
  it('accepts the shipped descriptors and builds their command lines', () => {
    const d = validateDescriptor(shipped('dcm2niix'));
    expect(buildCommandLine(d, validateParams(d, {}))).toBe(
      "dcm2niix -b y -z n -f 'volume_%s' -o . /data/in",
    );
    const t = validateDescriptor(shipped('threshold'));
    expect(buildCommandLine(t, validateParams(t, { threshold: 300, delay: 2 }))).toBe(
      'python3 /opt/aperture/pipelines/threshold.py /data/in . --threshold 300 --delay 2',
    );
    expect(buildCommandLine(t, validateParams(t, { threshold: 300 }))).toBe(
      'python3 /opt/aperture/pipelines/threshold.py /data/in . --threshold 300 ',
    );
  });

  it('refuses descriptors the schema or the input mapping refuses, listing every problem', () => {
    const base = shipped('threshold') as Record<string, unknown>;
    const problems = (v: unknown) => {
      try {
        validateDescriptor(v);
        return [];
      } catch (err) {
        expect(err).toBeInstanceOf(DescriptorError);
        return (err as DescriptorError).problems;
      }
    };
    expect(problems({ ...base, 'schema-version': '0.4' }).join()).toMatch(/schema-version/);
    expect(
      problems({ ...base, inputs: [{ id: 'a b', name: 'x', type: 'Text' }] }).length,
    ).toBeGreaterThanOrEqual(2);
    expect(problems({ ...base, 'command-line': 'true' }).join()).toMatch(/value-key '\[INPUT_DIR\]'/);
    expect(
      problems({
        ...base,
        'output-files': [{ id: 'o', name: 'o', 'path-template': '../escape.txt' }],
      }).join(),
    ).toMatch(/inside the working folder/);
    const noFile = {
      ...base,
      inputs: (base.inputs as Array<{ type: string }>).filter((i) => i.type !== 'File'),
    };
    expect(problems({ ...noFile, 'command-line': 'x [THRESHOLD] [DELAY]' }).join()).toMatch(
      /exactly one input of type File/,
    );
  });

  it('validates parameters against the descriptor: types, bounds, required, unknown and File inputs', () => {
    const t = validateDescriptor(shipped('threshold'));
    const problems = (p: unknown) => {
      try {
        validateParams(t, p);
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(problems({})).toMatch(/params.threshold: required/);
    expect(problems({ threshold: '5' })).toMatch(/a number is needed/);
    expect(problems({ threshold: 1e6 })).toMatch(/<= 65535/);
    expect(problems({ threshold: 1, nope: 1 })).toMatch(/no such input/);
    expect(problems({ threshold: 1, input_dir: '/etc' })).toMatch(/filled by Aperture/);
    const d = validateDescriptor(shipped('dcm2niix'));
    expect(problems.call(null, undefined)).toMatch(/required/);
    expect(() => validateParams(d, { compress: 'maybe' })).toThrow(/must be one of "y", "n"/);
  });

  it('quotes values so that a parameter cannot add shell syntax', () => {
    const d = validateDescriptor(shipped('dcm2niix'));
    const cmd = buildCommandLine(d, validateParams(d, { filename: "x'; rm -rf / #" }));
    expect(cmd).toBe("dcm2niix -b y -z n -f 'x'\\''; rm -rf / #' -o . /data/in");
  });

  it('runs tools in bubblewrap with no network, the inputs read-only and only the working folder writable', () => {
    const argv = sandboxArgv({
      command: 'true',
      inDir: '/w/in',
      outDir: '/w/out',
      limits: { cpuS: 10, memoryBytes: 1 << 30, fileBytes: 1 << 20 },
    });
    expect(argv.slice(0, 2)).toEqual(['prlimit', `--as=${1 << 30}`]);
    expect(argv).toEqual(
      expect.arrayContaining(['--unshare-all', '--die-with-parent', '--clearenv', '--cpu=10']),
    );
    const pairs = (flag: string) =>
      argv.flatMap((a, i) => (a === flag ? [`${argv[i + 1]}:${argv[i + 2]}`] : []));
    expect(pairs('--bind')).toEqual(['/w/out:/data/out']);
    expect(pairs('--ro-bind')).toEqual(expect.arrayContaining(['/usr:/usr', '/w/in:/data/in']));
    expect(argv).not.toContain('--share-net');
  });
});
