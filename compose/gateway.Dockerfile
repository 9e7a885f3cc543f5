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

# Production dependencies installed on their own, so that nothing the compiler or tests needed reaches the image.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
# Owned by root and read-only to the runtime user: a compromised process cannot rewrite its own code.
COPY --from=deps /app/package.json ./
COPY --from=deps /app/node_modules node_modules
COPY --from=build /app/dist dist
# Numeric (the image's `node` user), so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 1000:1000
EXPOSE 8080
CMD ["node", "dist/main.js"]
