#!/bin/sh
# `unimoe` on PATH inside the image: the CLI's TypeScript sources run through tsx's loader in this node process
# (no wrapper process, so SIGTERM from `docker stop` reaches the worker's and the edge's drain handlers).
exec node --import /app/infra/node_modules/tsx/dist/loader.mjs /app/edge/src/cli/main.ts "$@"
