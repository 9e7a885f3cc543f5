# The gateway and worker image (same code, two entry points: dist/main.js and dist/worker.js).
# Build from the repository root: docker build -f compose/gateway.Dockerfile .
# Node >= 20.19: jose 6 is an ES module, loaded by the CommonJS build through require(esm).
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/copy-assets.js scripts/
COPY src src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
# The realm file sits next to the code so that the local issuer (dist/devtools/oidc-issuer.js) finds it.
COPY keycloak keycloak
USER node
EXPOSE 8080
CMD ["node", "dist/main.js"]
