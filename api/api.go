// Package api carries calsync's API description for the binary to serve:
// the OpenAPI v2 document that `make generate` writes into openapi/ from
// proto/ (see buf.gen.yaml). Nothing here is written by hand except this
// file; `make check` fails when the document is stale.
package api

import _ "embed"

// OpenAPI is the REST API's OpenAPI v2 (Swagger) document, as JSON.
//
//go:embed openapi/calsync.swagger.json
var OpenAPI []byte
