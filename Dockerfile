# syntax=docker/dockerfile:1
# Build stage: compile TypeScript with the dev dependencies.
FROM node:26-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
RUN npm ci --no-audit --no-fund && npm run build

# Runtime stage: production dependencies and the compiled output only, as a non-root user.
FROM node:26-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY bin ./bin
COPY gateway.config.yaml users.yaml ./
# The example browser app, served by the demo echo upstream (compose's `echo`).
COPY examples/browser-app ./examples/browser-app
# The signing key's folder belongs to `node`, so a volume mounted on it (compose's
# gateway-keys) starts out owned by `node` and keygen can write the key there.
RUN mkdir keys && chown node:node keys
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 CMD ["node", "-e", "fetch('http://127.0.0.1:8080/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# The same command `npm start` runs, without the dev-time build and key generation.
ENTRYPOINT ["node", "bin/gateway.js"]
CMD ["--config", "gateway.config.yaml"]
