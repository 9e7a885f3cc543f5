# The gateway and worker image (same code, two entry points: dist/main.js and dist/worker.js).
# Build from the repository root: docker build -f compose/gateway.Dockerfile .
# Node >= 20.19: jose 6 is an ES module, loaded by the CommonJS build through require(esm).
# test/deploy.itest.ts lints this file: non-root numeric USER, no dev dependencies, no realm or secrets copied.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/copy-assets.js scripts/
COPY src src
RUN npm run build
# The tools and descriptors shipped with Aperture (issue 19), copied on from here: the final stage takes nothing
# from the build context but the package files.
COPY pipelines/bin pipelines/bin
COPY pipelines/descriptors pipelines/descriptors

# Production dependencies installed on their own, so that nothing the compiler or tests needed reaches the image.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
# What the worker's host runner of pipelines needs (issue 19; Debian bookworm packages, no recommends): bubblewrap
# (the sandbox; util-linux's prlimit is in the base image), dcm2niix, and python3 with pydicom and numpy for
# pipelines/bin/threshold.py. The gateway never runs them; one image keeps gateway and worker on the same code.
# /var/lib/aperture/files (RECORDS_FILES_DIR in compose and deploy) belongs to the runtime user, so that a volume
# mounted there starts writable by it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap dcm2niix python3 python3-pydicom python3-numpy \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 1000 -g 1000 -m 0750 /var/lib/aperture/files
# Owned by root and read-only to the runtime user: a compromised process cannot rewrite its own code.
COPY --from=deps /app/package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY --from=build /app/pipelines pipelines
# Numeric (the image's `node` user), so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
EXPOSE 8080
# The V8 old generation is bounded (tools/gateway-node-flags.ts says why); the worker overrides the command.
CMD ["node", "--max-old-space-size=256", "dist/main.js"]
