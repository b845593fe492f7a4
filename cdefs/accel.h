/* spdk/accel.h (+ spdk/accel_module.h): acceleration framework modules and opcode assignment. */

enum spdk_accel_opcode {
	SPDK_ACCEL_OPC_COPY = 0,
	SPDK_ACCEL_OPC_FILL = 1,
	SPDK_ACCEL_OPC_DUALCAST = 2,
	SPDK_ACCEL_OPC_COMPARE = 3,
	SPDK_ACCEL_OPC_CRC32C = 4,
	SPDK_ACCEL_OPC_COPY_CRC32C = 5,
	SPDK_ACCEL_OPC_COMPRESS = 6,
	SPDK_ACCEL_OPC_DECOMPRESS = 7,
	SPDK_ACCEL_OPC_ENCRYPT = 8,
	SPDK_ACCEL_OPC_DECRYPT = 9,
	SPDK_ACCEL_OPC_XOR = 10,
	SPDK_ACCEL_OPC_DIF_VERIFY = 11,
	SPDK_ACCEL_OPC_DIF_VERIFY_COPY = 12,
	SPDK_ACCEL_OPC_DIF_GENERATE = 13,
	SPDK_ACCEL_OPC_DIF_GENERATE_COPY = 14,
	SPDK_ACCEL_OPC_DIX_GENERATE = 15,
	SPDK_ACCEL_OPC_DIX_VERIFY = 16,
	SPDK_ACCEL_OPC_LAST = 17,
};

int spdk_accel_get_opc_module_name(enum spdk_accel_opcode opcode, const char **module_name);
const char *spdk_accel_get_opcode_name(enum spdk_accel_opcode opcode);
int spdk_accel_assign_opc(enum spdk_accel_opcode opcode, const char *name);

/* spdk/accel_module.h */
struct spdk_accel_module_if {
	const char *name;
	int priority;
	...;
};

struct spdk_accel_module_if *spdk_accel_get_module(const char *name);
