/* spdk/json.h: JSON values, in-place parser and streaming writer. */

enum spdk_json_val_type {
	SPDK_JSON_VAL_INVALID = 0,
	SPDK_JSON_VAL_NULL = 2,
	SPDK_JSON_VAL_TRUE = 4,
	SPDK_JSON_VAL_FALSE = 8,
	SPDK_JSON_VAL_NUMBER = 16,
	SPDK_JSON_VAL_STRING = 32,
	SPDK_JSON_VAL_ARRAY_BEGIN = 64,
	SPDK_JSON_VAL_ARRAY_END = 128,
	SPDK_JSON_VAL_OBJECT_BEGIN = 256,
	SPDK_JSON_VAL_OBJECT_END = 512,
	SPDK_JSON_VAL_NAME = 1024,
};
#define SPDK_JSON_VAL_ANY ...

struct spdk_json_val {
	void *start;
	uint32_t len;
	enum spdk_json_val_type type;
	...;
};

#define SPDK_JSON_PARSE_INVALID ...
#define SPDK_JSON_PARSE_INCOMPLETE ...
#define SPDK_JSON_PARSE_MAX_DEPTH_EXCEEDED ...

#define SPDK_JSON_PARSE_FLAG_DECODE_IN_PLACE ...
#define SPDK_JSON_PARSE_FLAG_ALLOW_COMMENTS ...

ssize_t spdk_json_parse(void *json, size_t size, struct spdk_json_val *values, size_t num_values,
			void **end, uint32_t flags);

size_t spdk_json_val_len(const struct spdk_json_val *val);
bool spdk_json_strequal(const struct spdk_json_val *val, const char *str);
char *spdk_json_strdup(const struct spdk_json_val *val);
int spdk_json_number_to_int32(const struct spdk_json_val *val, int32_t *num);
int spdk_json_number_to_uint32(const struct spdk_json_val *val, uint32_t *num);
int spdk_json_number_to_uint64(const struct spdk_json_val *val, uint64_t *num);

int spdk_json_find(struct spdk_json_val *object, const char *key_name, struct spdk_json_val **key,
		   struct spdk_json_val **val, enum spdk_json_val_type type);
struct spdk_json_val *spdk_json_object_first(struct spdk_json_val *object);
struct spdk_json_val *spdk_json_array_first(struct spdk_json_val *array_begin);
struct spdk_json_val *spdk_json_next(struct spdk_json_val *pos);

#define SPDK_JSON_WRITE_FLAG_FORMATTED ...

/* v26.05: JSON-RPC batch writing and array counting. Absent from v26.01:
 * PYSPDK_HAS_JSON_BATCHES is 0 there and these names leave lib. */
static const long PYSPDK_HAS_JSON_BATCHES;
#define SPDK_JSON_WRITE_FLAG_FLATTEN_BATCHES ...
void spdk_json_write_add_flags(struct spdk_json_write_ctx *w, uint32_t flags);
int spdk_json_write_batch_begin(struct spdk_json_write_ctx *w);
int spdk_json_write_batch_end(struct spdk_json_write_ctx *w);
size_t spdk_json_array_count(const struct spdk_json_val *val);

typedef int (*spdk_json_write_cb)(void *cb_ctx, const void *data, size_t size);

struct spdk_json_write_ctx *spdk_json_write_begin(spdk_json_write_cb write_cb, void *cb_ctx,
		uint32_t flags);
int spdk_json_write_end(struct spdk_json_write_ctx *w);

int spdk_json_write_null(struct spdk_json_write_ctx *w);
int spdk_json_write_bool(struct spdk_json_write_ctx *w, bool val);
int spdk_json_write_int32(struct spdk_json_write_ctx *w, int32_t val);
int spdk_json_write_uint32(struct spdk_json_write_ctx *w, uint32_t val);
int spdk_json_write_int64(struct spdk_json_write_ctx *w, int64_t val);
int spdk_json_write_uint64(struct spdk_json_write_ctx *w, uint64_t val);
int spdk_json_write_double(struct spdk_json_write_ctx *w, double val);
int spdk_json_write_string(struct spdk_json_write_ctx *w, const char *val);
int spdk_json_write_string_raw(struct spdk_json_write_ctx *w, const char *val, size_t len);
int spdk_json_write_uuid(struct spdk_json_write_ctx *w, const struct spdk_uuid *uuid);
int spdk_json_write_array_begin(struct spdk_json_write_ctx *w);
int spdk_json_write_array_end(struct spdk_json_write_ctx *w);
int spdk_json_write_object_begin(struct spdk_json_write_ctx *w);
int spdk_json_write_object_end(struct spdk_json_write_ctx *w);
int spdk_json_write_name(struct spdk_json_write_ctx *w, const char *name);
int spdk_json_write_name_raw(struct spdk_json_write_ctx *w, const char *name, size_t len);
int spdk_json_write_val(struct spdk_json_write_ctx *w, const struct spdk_json_val *val);
int spdk_json_write_val_raw(struct spdk_json_write_ctx *w, const void *data, size_t len);

int spdk_json_write_named_null(struct spdk_json_write_ctx *w, const char *name);
int spdk_json_write_named_bool(struct spdk_json_write_ctx *w, const char *name, bool val);
int spdk_json_write_named_int32(struct spdk_json_write_ctx *w, const char *name, int32_t val);
int spdk_json_write_named_uint32(struct spdk_json_write_ctx *w, const char *name, uint32_t val);
int spdk_json_write_named_int64(struct spdk_json_write_ctx *w, const char *name, int64_t val);
int spdk_json_write_named_uint64(struct spdk_json_write_ctx *w, const char *name, uint64_t val);
int spdk_json_write_named_double(struct spdk_json_write_ctx *w, const char *name, double val);
int spdk_json_write_named_string(struct spdk_json_write_ctx *w, const char *name, const char *val);
int spdk_json_write_named_uuid(struct spdk_json_write_ctx *w, const char *name,
			       const struct spdk_uuid *uuid);
int spdk_json_write_named_array_begin(struct spdk_json_write_ctx *w, const char *name);
int spdk_json_write_named_object_begin(struct spdk_json_write_ctx *w, const char *name);
