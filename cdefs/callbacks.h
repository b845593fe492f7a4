/* extern "Python" trampolines: C calls into Python. Filled by the runtime. */
